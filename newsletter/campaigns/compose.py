"""Campaign composition: Markdown -> sanitised HTML in the mail layout, plus readable plain text.

Rendering is done once per campaign and layout language. The result is a pair
of templates in which only the personal parts (name, unsubscribe and
preference links) are placeholders; :func:`personalise` fills them per
recipient with plain string replacement, which costs microseconds instead of
a template render.

Subject and body are sent as staff wrote them. The layout around them (the
footer's reason for the mail, the link labels, the ``lang`` attribute) is in
the recipient's language: a campaign is rendered once for each configured
language its recipients read (:func:`store_renderings`), and each recipient
gets the rendering of their language (:func:`layout_locale`).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import css_inline
import nh3
from flask import current_app, render_template
from markdown_it import MarkdownIt

from ..models.campaigns import Campaign, CampaignRendering
from .plaintext import markdown_text

# Placeholders: letters and digits only, so Markdown (where _ and * mean
# emphasis), the sanitiser and the CSS inliner all leave them untouched.
NAME = "NLPH7f3aNAME"
UNSUBSCRIBE_URL = "NLPH7f3aUNSUBSCRIBE"
MANAGE_URL = "NLPH7f3aMANAGE"
# What an author writes in the Markdown to greet each recipient by name.
NAME_TAG = re.compile(r"\{\{\s*name\s*\}\}")
_PLACEHOLDER = re.compile(f"({NAME}|{UNSUBSCRIBE_URL}|{MANAGE_URL})")

ALLOWED_TAGS = {
    "a", "p", "br", "hr", "h1", "h2", "h3", "h4", "strong", "em", "b", "i", "u", "s",
    "ul", "ol", "li", "blockquote", "code", "pre", "table", "thead", "tbody", "tr", "th",
    "td", "img",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "width", "height"}}

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


@dataclass(frozen=True)
class RenderedCampaign:
    """A campaign's HTML and text with placeholders for the personal parts."""

    subject: str
    html: str
    text: str


def markdown_to_safe_html(markdown: str) -> str:
    """Markdown to HTML, then sanitised: no script, no style, no foreign images.

    Raw HTML in the Markdown is not passed through at all; the sanitiser is the
    second fence. Images must live on our own origin: a picture loaded from a
    third party is a tracking pixel whether or not anyone meant it as one.
    """
    own_origin = _origin(current_app.config.get("BASE_URL") or "")

    def keep(tag: str, attribute: str, value: str) -> str | None:
        # Without a BASE_URL no image is ours; a src without scheme and host
        # (relative, or protocol-relative "//tracker.example/p.gif") is never ours.
        if (
            tag == "img"
            and attribute == "src"
            and (own_origin is None or _origin(value) != own_origin)
        ):
            return None
        return value

    return nh3.clean(
        _markdown.render(markdown),
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        attribute_filter=keep,
        link_rel="noopener",
    )


def markdown_to_text(markdown: str) -> str:
    """Markdown as the readable plain text of the mail's text part (links as
    ``text (url)``), read by the same parser as the HTML (see plaintext.py)."""
    return markdown_text(markdown, _markdown)


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else None


def render_campaign(subject: str, markdown: str, list_name: str) -> RenderedCampaign:
    """Render a campaign once: HTML in the mail layout with CSS inlined, and text."""
    config = current_app.config
    context = {
        "subject": subject,
        "list_name": list_name,
        "organization": config["ORGANIZATION_NAME"],
        "postal_address": config["POSTAL_ADDRESS"],
        "name": NAME,
        "unsubscribe_url": UNSUBSCRIBE_URL,
        "manage_url": MANAGE_URL,
    }
    markdown = NAME_TAG.sub(NAME, markdown)
    body_html = markdown_to_safe_html(markdown)
    page = render_template("mail/campaign.html", body=body_html, **context)
    inlined = css_inline.inline(page)
    text = render_template("mail/campaign.txt", body=markdown_to_text(markdown), **context)
    return RenderedCampaign(subject=subject, html=inlined, text=text)


def personalise(
    template: str, *, name: str, unsubscribe_url: str, manage_url: str, is_html: bool
) -> str:
    """Fill one recipient's parts into a rendered template."""
    values = {NAME: name, UNSUBSCRIBE_URL: unsubscribe_url, MANAGE_URL: manage_url}
    if is_html:
        values = {key: html.escape(value) for key, value in values.items()}
    # One pass: a name that happens to contain a placeholder stays as written.
    return _PLACEHOLDER.sub(lambda match: values[match.group()], template)


def split_template(template: str) -> tuple[list[str], list[str]]:
    """A rendered template as its static parts and the placeholders between them.

    ``parts[0] + value(slots[0]) + parts[1] + ...`` is what :func:`personalise`
    returns; the send loop encodes the parts once per campaign instead.
    """
    pieces = _PLACEHOLDER.split(template)  # static, slot, static, ..., static
    return pieces[0::2], pieces[1::2]


def default_locale() -> str:
    """The app's default language (BABEL_DEFAULT_LOCALE)."""
    return str(current_app.config["BABEL_DEFAULT_LOCALE"])


def layout_locale(locale: str | None) -> str:
    """The language a mail's layout is in for someone who reads ``locale``:
    that language when it is configured (LANGUAGES), else the default."""
    if locale and locale in current_app.config["LANGUAGES"]:
        return locale
    return default_locale()


def store_renderings(campaign: Campaign, renderings: dict[str, RenderedCampaign]) -> None:
    """Freeze a starting campaign's renderings, one per layout language.

    The first becomes the campaign's main rendering (``rendered_html``,
    ``rendered_text``, ``rendered_locale``): anyone whose language has no
    rendering of its own gets that one. The others are stored beside it.
    """
    (first, main), *others = renderings.items()
    campaign.rendered_html, campaign.rendered_text = main.html, main.text
    campaign.rendered_locale = first
    campaign.renderings = [
        CampaignRendering(locale=locale, html=rendered.html, text=rendered.text)
        for locale, rendered in others
    ]


def main_locale(campaign: Campaign) -> str:
    """The language of a started campaign's main rendering (campaigns started
    before per-language renderings were rendered in the default language)."""
    return campaign.rendered_locale or default_locale()


def stored_rendering(campaign: Campaign, locale: str) -> tuple[str, str]:
    """A started campaign's frozen HTML and text for readers of ``locale``:
    the rendering in that language when one was made, else the main one."""
    if locale != main_locale(campaign):
        for rendering in campaign.renderings:
            if rendering.locale == locale:
                return rendering.html, rendering.text
    assert campaign.rendered_html is not None
    return campaign.rendered_html, campaign.rendered_text or ""
