"""A campaign's Markdown as readable plain text, for the text part of the mail.

The text part is what a reader without HTML sees, and what spam filters
compare with the HTML part: it must read as text, not as Markdown source.
The Markdown is parsed by the same parser as the HTML (markdown-it, CommonMark
with tables, raw HTML off) and its token stream is written out as text:

- emphasis, strong and strike-through: the words alone;
- a link: ``text (url)``, or the URL alone when it is the text (an autolink)
  or there is no text; a link to anything but http, https or mailto: the text
  alone (the HTML part drops such links too);
- an image: its alternative text;
- headings: the text, underlined with "=" (level 1) or "-" (level 2);
- lists: "- " or "1. " before each item, nested items indented;
- block quotes: "> " before each line;
- code: inline as written, blocks indented by four spaces;
- a table: one line per row, cells separated by " | ";
- a thematic break: "* * *".

The token stream is walked with an explicit stack, never recursively: input
nested thousands deep cannot exhaust Python's recursion limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from markdown_it import MarkdownIt
from markdown_it.token import Token

LINK_SCHEMES = frozenset({"http", "https", "mailto"})
RULE = "* * *"
CODE_INDENT = "    "


@dataclass
class _Frame:
    """A container block open around what is being written: a block quote, a
    list, or a list item (whose marker goes before its first line only)."""

    kind: str  # "quote", "list", "item"
    marker: str = ""
    used: bool = False
    number: int = 1  # the next item's number in an ordered list
    ordered: bool = False


@dataclass
class _Writer:
    lines: list[str] = field(default_factory=list)
    stack: list[_Frame] = field(default_factory=list)
    blank_before: bool = False  # the next block needs a blank line before it

    def prefix(self, *, first: bool) -> str:
        """What goes before a line: "> " per quote, the item's marker on its first
        line and its indentation after."""
        parts = []
        for frame in self.stack:
            if frame.kind == "quote":
                parts.append("> ")
            elif frame.kind == "item":
                if first and not frame.used:
                    parts.append(frame.marker)
                else:
                    parts.append(" " * len(frame.marker))
        return "".join(parts)

    def block(self, lines: list[str], *, tight: bool = False) -> None:
        """Write one block's lines, separated from the one before by a blank line
        (none inside a tight list)."""
        if self.lines and self.blank_before and not tight:
            self.separate()
        for index, line in enumerate(lines or [""]):
            first = index == 0
            self.lines.append((self.prefix(first=first) + line).rstrip())
            if first:
                for frame in self.stack:
                    if frame.kind == "item":
                        frame.used = True
        self.blank_before = not tight

    def separate(self) -> None:
        """A blank line (inside the quotes that are open)."""
        self.lines.append(self.prefix(first=False).rstrip())
        self.blank_before = False

    def open(self, frame: _Frame) -> None:
        """Start a quote or a list: a blank line before it unless a tight
        paragraph (a list item's) was just written."""
        if self.lines and self.blank_before:
            self.separate()
        self.stack.append(frame)

    def close(self) -> None:
        """End the innermost quote or list; what follows is a block of its own."""
        if self.stack:
            self.stack.pop()
        self.blank_before = True


def _link_target(href: str) -> str | None:
    """The URL to show for a link, or None when it is not one a reader can use."""
    scheme = urlsplit(href).scheme.lower() if href else ""
    return href if scheme in LINK_SCHEMES else None


def inline_text(children: list[Token] | None) -> str:
    """An inline token's children as text (links as ``text (url)``)."""
    out: list[str] = []
    links: list[tuple[int, str | None]] = []  # where each open link's text starts, its URL
    for token in children or ():
        kind = token.type
        if kind in ("text", "code_inline", "html_inline"):
            out.append(token.content)
        elif kind in ("softbreak", "hardbreak"):
            out.append("\n")
        elif kind == "image":
            out.append(token.content)
        elif kind == "link_open":
            links.append((len(out), _link_target(str(token.attrGet("href") or ""))))
        elif kind == "link_close" and links:
            start, target = links.pop()
            if target is None:
                continue
            label = "".join(out[start:]).strip()
            shown = target.removeprefix("mailto:") if target.startswith("mailto:") else target
            if not label:
                out.append(target)
            elif label not in (target, shown):
                out.append(f" ({target})")
    return "".join(out)


def markdown_text(markdown: str, parser: MarkdownIt) -> str:
    """``markdown`` (as ``parser`` reads it) written as plain text."""
    writer = _Writer()
    tokens = parser.parse(markdown)
    heading = ""
    tight = False
    row: list[str] | None = None
    table: list[str] | None = None
    for token in tokens:
        kind = token.type
        if kind == "blockquote_open":
            writer.open(_Frame("quote"))
        elif kind in ("bullet_list_open", "ordered_list_open"):
            start = token.attrGet("start")
            number = int(start) if isinstance(start, int | str) and str(start).isdigit() else 1
            writer.open(_Frame("list", number=number, ordered=kind == "ordered_list_open"))
        elif kind == "list_item_open":
            parent = writer.stack[-1] if writer.stack else _Frame("list")
            if parent.ordered:
                marker = f"{parent.number}. "
                parent.number += 1
            else:
                marker = "- "
            writer.stack.append(_Frame("item", marker=marker))
        elif kind in ("blockquote_close", "bullet_list_close", "ordered_list_close"):
            writer.close()
        elif kind == "list_item_close":
            if writer.stack and not writer.stack[-1].used:
                writer.block([])  # an empty item still shows its marker
            if writer.stack:
                writer.stack.pop()
        elif kind == "paragraph_open":
            tight = token.hidden
        elif kind == "heading_open":
            heading = token.tag
        elif kind == "inline":
            text = inline_text(token.children)
            if row is not None:
                row.append(" ".join(text.split()))
                continue
            lines = text.split("\n")
            if heading in ("h1", "h2"):
                width = max(3, min(76, max(map(len, lines))))
                lines.append(("=" if heading == "h1" else "-") * width)
            writer.block(lines, tight=tight and not heading)
            heading = ""
            tight = False
        elif kind in ("fence", "code_block"):
            code = token.content.rstrip("\n").split("\n")
            writer.block([CODE_INDENT + line if line else "" for line in code])
        elif kind == "hr":
            writer.block([RULE])
        elif kind == "table_open":
            table = []
        elif kind == "tr_open":
            row = []
        elif kind == "tr_close":
            if table is not None and row is not None:
                table.append(" | ".join(row))
            row = None
        elif kind == "table_close":
            writer.block(table or [])
            table = None
    return "\n".join(writer.lines).strip("\n")
