"""Every header line of every mail we send is written by :func:`header_line`.

Header values come from people: a subscriber's name and address, a list's
name, a campaign's subject and sender. The ``email`` package decodes RFC 2047
encoded words wherever it meets them when it parses a header (in a subject,
inside a quoted display name, even in an address's local part), and when it
folds or re-serialises a header it may write the decoded text back as it is:
an encoded word that decodes to CR LF became a second header, or a body
(CVE-2024-6923 and relatives; 3.11.7 here). So no value is handed to the
``email`` package to encode. Here every value is first made readable text on
one line (no control character, no line break, no lone surrogate, no "=?"
that could open an encoded word), then written by rules simple enough to
check: plain ASCII as it is, anything else as encoded words made here from
that clean text. An address that cannot be written safely is refused
(:class:`UnsafeHeader`), never repaired. Whatever the Python version, the
output holds no line break but folding (CRLF + space) and no encoded word that
decodes to a control character.
"""

from __future__ import annotations

import base64
import re
import string
from dataclasses import dataclass
from email.utils import parseaddr

CRLF = b"\r\n"
MAX_LINE = 998  # RFC 5322, without the CRLF
FOLD_AT = 78  # where encoded words are folded onto a new line
WORD_BYTES = 45  # UTF-8 bytes in one encoded word: 60 base64 characters, 72 in all

# Headers whose value is free text.
TEXT = frozenset({"Subject"})
# Headers whose value is one mailbox: a display name and an addr-spec.
ADDRESS = frozenset({"From", "To", "Reply-To"})
# A display name and a list identifier (RFC 2919): "Name <slug.host>".
LIST_ID = "List-Id"
# Headers whose value we make ourselves (dates, ids, URLs, MIME parameters):
# written as given, or refused when they are not plain printable ASCII.
VERBATIM = frozenset(
    {
        "Date",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
        "Feedback-ID",
    }
)
HEADER_NAMES = TEXT | ADDRESS | VERBATIM | {LIST_ID}

ATEXT = "A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
ATOMS = re.compile(f"[{ATEXT}]+(?: [{ATEXT}]+)*")
DOT_ATOM = re.compile(f"[{ATEXT}]+(?:\\.[{ATEXT}]+)*")
LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
HOST = re.compile(f"{LABEL}(?:\\.{LABEL})*")
ATEXT_SET = frozenset(string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-")
MAX_ADDRESS = 320
PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")
SURROGATE = re.compile("[\ud800-\udfff]")
# C0 and C1 controls and DEL that str.split() does not count as white space
# (those it does count, CR, LF, TAB, NEL ..., become one space).
CONTROL = re.compile(r"[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]")


class UnsafeHeader(ValueError):
    """A header that cannot be written safely (an unknown name, a bad address)."""


@dataclass(frozen=True)
class Mailbox:
    """A display name (any text) and an address (checked when it is written)."""

    name: str
    address: str

    @classmethod
    def parse(cls, text: str) -> Mailbox:
        """``Name <address>`` or a bare address, read by ``email.utils.parseaddr``,
        which decodes no encoded words; only the first mailbox counts."""
        name, address = parseaddr(text)
        return cls(name, address)


def readable(text: str) -> str:
    """Text as a header may carry it: one line, single spaces, no control
    characters, lone surrogates as U+FFFD, and "=?" broken to "= ?" so that
    no encoded word can start in it (no real name or subject needs one)."""
    text = CONTROL.sub("", SURROGATE.sub("\ufffd", text))
    return " ".join(text.split()).replace("=?", "= ?")


def header_line(name: str, value: str | Mailbox, *, utf8: bool = False) -> bytes:
    """One header line, folded where needed, without its final CRLF.

    ``name`` must be one of HEADER_NAMES. Subject is free text; From, To and
    Reply-To take a :class:`Mailbox` (or a string parsed into one); List-Id
    a Mailbox whose address is the list identifier; the rest are written as
    given and must be printable ASCII. ``utf8`` (a message sent with SMTPUTF8)
    allows a non-ASCII address and writes a non-ASCII display name as UTF-8;
    without it the line is 7-bit. Raises UnsafeHeader for what cannot be
    written safely.
    """
    if name not in HEADER_NAMES:
        raise UnsafeHeader(f"{name!r} is not a header we write")
    if name in VERBATIM:
        if not isinstance(value, str):
            raise UnsafeHeader(f"{name} takes text")
        return _verbatim(name, value)
    if name in TEXT:
        if not isinstance(value, str):
            raise UnsafeHeader(f"{name} takes text")
        return _text(name, readable(value))
    mailbox = value if isinstance(value, Mailbox) else Mailbox.parse(value)
    if name == LIST_ID:
        if not DOT_ATOM.fullmatch(mailbox.address) or "=?" in mailbox.address:
            raise UnsafeHeader("a list identifier is a dot-atom")
        return _mailbox(name, readable(mailbox.name), mailbox.address, utf8=False)
    address = _address(mailbox.address, utf8=utf8)
    return _mailbox(name, readable(mailbox.name), address, utf8=utf8)


def _verbatim(name: str, value: str) -> bytes:
    """A value we made: printable ASCII on one line, no encoded word."""
    line = f"{name}: {value}"
    if not value or not PRINTABLE_ASCII.fullmatch(value) or "=?" in value:
        raise UnsafeHeader(f"{name} is not plain ASCII")
    if len(line) > MAX_LINE:
        raise UnsafeHeader(f"{name} is longer than a line")
    return line.encode("ascii")


def _text(name: str, text: str) -> bytes:
    """Free text: as it is when it is ASCII and fits a line, else encoded words."""
    line = f"{name}: {text}"
    if text.isascii() and len(line) <= MAX_LINE:
        return line.encode("ascii")
    return _fold(f"{name}:", encoded_words(text))


def _mailbox(name: str, display: str, address: str, *, utf8: bool) -> bytes:
    """``display <address>`` (a bare address without a name, but a list
    identifier always in brackets); the name as atoms, a quoted string or
    encoded words."""
    angle = f"<{address}>"
    if not display:
        return f"{name}: {angle if name == LIST_ID else address}".encode()
    if ATOMS.fullmatch(display) or (utf8 and _utf8_atoms(display)):
        phrase = display
    elif display.isascii() or utf8:
        phrase = '"' + display.replace("\\", "\\\\").replace('"', '\\"') + '"'
    else:
        return _fold(f"{name}:", [*encoded_words(display), angle])
    line = f"{name}: {phrase} {angle}".encode()
    if len(line) <= MAX_LINE:
        return line
    return _fold(f"{name}:", [*encoded_words(display), angle])


def _utf8_atoms(display: str) -> bool:
    """Words of atext or non-ASCII characters only (RFC 6532), single spaces."""
    return all(word and all(_utf8_atext(ch) for ch in word) for word in display.split(" "))


def _utf8_atext(ch: str) -> bool:
    """RFC 6532 atext: ASCII atext, or a visible non-ASCII character."""
    if ch.isascii():
        return ch in ATEXT_SET
    return ch.isprintable() and not ch.isspace()


def _address(address: str, *, utf8: bool) -> str:
    """An addr-spec as written in a header: a dot-atom local part (no "=?")
    and a host name; non-ASCII only with SMTPUTF8. Anything else is refused."""
    local, at, host = address.rpartition("@")
    if not at or "=?" in local or len(address) > MAX_ADDRESS:
        raise UnsafeHeader("not an address we can write")
    if address.isascii():
        if DOT_ATOM.fullmatch(local) and HOST.fullmatch(host):
            return address
        raise UnsafeHeader("not an address we can write")
    if not utf8:
        raise UnsafeHeader("a non-ASCII address needs SMTPUTF8")
    atoms_ok = all(part and all(map(_utf8_atext, part)) for part in local.split("."))
    labels_ok = all(
        label and all(ch.isalnum() or ch == "-" for ch in label) for label in host.split(".")
    )
    if not (atoms_ok and labels_ok):
        raise UnsafeHeader("not an address we can write")
    return address


def encoded_words(text: str) -> list[str]:
    """RFC 2047 B-encoded words of ``text`` (UTF-8), each at most 72 characters.

    Text is split between characters, after a space where the word has one: a
    reader drops the white space between adjacent encoded words (RFC 2047), so
    the spaces travel inside the words. (CPython's address parser keeps that
    white space too, and reads one more space at each split.)
    """
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    for ch in text:
        length = len(ch.encode("utf-8"))
        while chunk and size + length > WORD_BYTES:
            cut = _cut(chunk)
            words.append(_word("".join(chunk[:cut])))
            chunk = chunk[cut:]
            size = len("".join(chunk).encode("utf-8"))
        chunk.append(ch)
        size += length
    if chunk or not words:
        words.append(_word("".join(chunk)))
    return words


def _cut(chunk: list[str]) -> int:
    """Where to end a full word: after its last space, else at its end."""
    for index in range(len(chunk) - 1, 0, -1):
        if chunk[index - 1] == " ":
            return index
    return len(chunk)


def _word(text: str) -> str:
    """One encoded word."""
    return "=?utf-8?b?" + base64.b64encode(text.encode("utf-8")).decode("ascii") + "?="


def _fold(start: str, words: list[str]) -> bytes:
    """``start`` and the words, separated by a space, or by CRLF and a space
    where a line would pass FOLD_AT characters."""
    lines = [start]
    for word in words:
        if len(lines[-1]) + 1 + len(word.encode()) > FOLD_AT and lines[-1] != start:
            lines.append(" " + word)
        else:
            lines[-1] += " " + word
    encoded = [line.encode() for line in lines]
    if max(map(len, encoded)) > MAX_LINE:
        raise UnsafeHeader(f"{start} has a word longer than a line")
    return CRLF.join(encoded)
