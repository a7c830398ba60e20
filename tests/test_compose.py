"""Composing a campaign: Markdown -> sanitised HTML in the mail layout, and its MIME form.

What is proved here: Markdown is rendered by markdown-it-py and sanitised by
nh3 (no raw HTML, scripts, event handlers, javascript: links or foreign
images get through, even if the Markdown stage let raw HTML pass); links are
sent as written and nothing is added (no pixel); CSS is inlined; the layout
carries the sender's identity, postal address, the reason for the mail and
the unsubscribe and preference links; names are filled in per recipient and
escaped in HTML; rendering happens once per campaign; and the per-recipient
MIME built by ``mime.build_message`` is what the ``email`` parser and a real
SMTP server (SMTPUTF8 included) accept. Header injection through a
campaign's subject or sender is refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from markdown_it import MarkdownIt
from sqlalchemy import func, select

from newsletter.campaigns import compose, mime, service
from newsletter.campaigns.compose import (
    markdown_to_safe_html,
    personalise,
    render_campaign,
)
from newsletter.campaigns.delivery import send_deliveries
from newsletter.campaigns.service import create_campaign, start_campaign
from newsletter.extensions import db
from newsletter.models import Campaign, MailingList
from newsletter.validation import InvalidInput

from .conftest import ORIGIN
from .fixtures.mailflow import html_of, link_path, text_of
from .fixtures.smtp import SMTPServer

Deliver = Callable[[], list[EmailMessage]]
Subscribed = Callable[..., EmailMessage]

DANGEROUS = """\
# Nyt

<script>alert("script")</script>
<style>body { display: none }</style>
<iframe src="https://evil.example/frame"></iframe>
<img src="x" onerror="alert('img')">
<a href="https://inklusio.dk/" onclick="alert('a')" onmouseover="alert('b')">raw link</a>
<p style="background:url(https://evil.example/bg.png)">styled</p>
<object data="https://evil.example/o"></object><embed src="https://evil.example/e">
<form action="https://evil.example/f"><input name="q"></form>
<svg onload="alert('svg')"></svg>
<link rel="stylesheet" href="https://evil.example/s.css">
<meta http-equiv="refresh" content="0;url=https://evil.example/">

[js](javascript:alert(1)) [JS](JaVaScRiPt:alert(2)) [vb](vbscript:msgbox) \
[data](data:text/html;base64,PHNjcmlwdD4=) [ok](https://inklusio.dk/ok)

![pixel](javascript:alert(3))
"""
FORBIDDEN_TAGS = {
    "script", "style", "iframe", "object", "embed", "form", "input", "svg", "link", "meta",
}  # fmt: skip


class Elements(HTMLParser):
    """Every start tag with its attributes, and the visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_html(markup: str) -> Elements:
    """The markup's elements and text, as a browser's tokenizer sees them."""
    parser = Elements()
    parser.feed(markup)
    parser.close()
    return parser


def visible_text(markup: str) -> str:
    """The text a reader sees, whitespace collapsed (entities decoded)."""
    return " ".join("".join(parse_html(markup).text).split())


def attribute_values(markup: str, tag: str, attribute: str) -> list[str | None]:
    """The value of one attribute on every element of one kind."""
    return [attrs.get(attribute) for name, attrs in parse_html(markup).tags if name == tag]


def assert_nothing_active(markup: str, *, layout: bool = False) -> None:
    """No element that runs code or loads things, no handler, no script URL.

    The layout's own head has <meta charset> and <meta name=viewport>; no other
    meta (a refresh, say) may appear.
    """
    for tag, attrs in parse_html(markup).tags:
        if layout and tag == "meta":
            assert "http-equiv" not in attrs, attrs
            continue
        assert tag not in FORBIDDEN_TAGS, f"<{tag}> got through"
        for name, value in attrs.items():
            assert not name.startswith("on"), f"<{tag} {name}> got through"
            if name in {"href", "src"}:
                scheme = urlsplit(value or "").scheme.lower()
                assert scheme in {"http", "https", "mailto"}, f"<{tag} {name}={value!r}>"


def parse(raw: bytes) -> EmailMessage:
    """A message as a receiving mail client reads it."""
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def header_line(raw: bytes, name: str) -> bytes:
    """One header as it is on the wire (unfolded is not needed: ours fit one line)."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    lines = [line for line in head.split(b"\r\n") if line.lower().startswith(name.lower() + b":")]
    assert len(lines) == 1, f"expected one {name!r} header, got {lines}"
    return lines[0]


def lf(text: str) -> str:
    """Line ends as written: a text part's CRLF (canonical form) read back as LF."""
    return text.replace("\r\n", "\n")


def campaign_count() -> int:
    db.session.commit()
    return db.session.scalar(select(func.count()).select_from(Campaign)) or 0


# --- Markdown, sanitising, images, links --------------------------------------------


def test_markdown_is_rendered_by_markdown_it(app: Flask) -> None:
    body = markdown_to_safe_html(
        "# Overskrift\n\n*kursiv* **fed** `kode`\n\n- en\n- to\n\n"
        "> citat\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
    )

    assert "<h1>Overskrift</h1>" in body
    assert "<em>kursiv</em> <strong>fed</strong> <code>kode</code>" in body
    assert "<li>en</li>" in body
    assert "<blockquote>" in body
    assert "<td>1</td>" in body  # the table extension is on


@pytest.mark.parametrize("raw_html_in_markdown", [False, True], ids=["commonmark", "html-on"])
def test_raw_html_scripts_handlers_and_script_urls_never_reach_the_html(
    app: Flask, monkeypatch: pytest.MonkeyPatch, raw_html_in_markdown: bool
) -> None:
    """Raw HTML is not passed by markdown-it; and should it ever be (html-on), nh3 removes
    every active element, handler and script URL: two fences, each enough alone."""
    if raw_html_in_markdown:
        monkeypatch.setattr(compose, "_markdown", MarkdownIt("commonmark", {"html": True}))

    body = markdown_to_safe_html(DANGEROUS)
    page = personalise(
        render_campaign("Nyt", DANGEROUS, "Nyhedsbrev").html,
        name="Eve",
        unsubscribe_url=f"{ORIGIN}/unsubscribe/t",
        manage_url=f"{ORIGIN}/manage/t",
        is_html=True,
    )

    assert_nothing_active(body)
    assert_nothing_active(page, layout=True)
    for markup in (body, page):
        assert "evil.example" not in "".join(
            str(value) for _, attrs in parse_html(markup).tags for value in attrs.values()
        )
    assert attribute_values(body, "a", "href").count("https://inklusio.dk/ok") == 1
    if raw_html_in_markdown:
        # nh3 kept the harmless parts of the raw HTML, without their handlers.
        assert ("a", {"href": "https://inklusio.dk/", "rel": "noopener"}) in parse_html(body).tags
        assert 'alert("script")' not in body  # the script's content dropped too
        assert "display: none" not in body  # and the style sheet's
    else:
        assert "&lt;script&gt;" in body  # shown as the text the author typed, inert


def test_images_from_another_origin_lose_their_src_and_own_images_stay(app: Flask) -> None:
    own = f"{ORIGIN}/static/logo.png"
    body = markdown_to_safe_html(
        "![pixel](https://tracker.example/p.gif) "
        "![protocol-relative](//tracker.example/p.gif) "
        "![lookalike](http://newsletter.test.evil.example/p.gif) "
        "![userinfo](http://newsletter.test@evil.example/p.gif) "
        "![other-scheme](https://newsletter.test/p.gif) "
        "![relative](/static/p.gif) "
        f"![logo]({own})"
    )

    images = [attrs for tag, attrs in parse_html(body).tags if tag == "img"]
    assert [attrs.get("alt") for attrs in images] == [
        "pixel", "protocol-relative", "lookalike", "userinfo", "other-scheme", "relative", "logo",
    ]  # fmt: skip
    assert [attrs.get("src") for attrs in images] == [None] * 6 + [own]


def test_without_base_url_no_image_is_kept(app: Flask) -> None:
    """With no BASE_URL nothing is "our origin": a protocol-relative pixel must not pass
    for one (it did: both origins came out as None and compared equal)."""
    app.config["BASE_URL"] = ""

    body = markdown_to_safe_html("![a](//tracker.example/p.gif) ![b](/p.gif) ![c](p.gif)")

    assert attribute_values(body, "img", "src") == [None, None, None]


def test_links_are_sent_as_written_and_nothing_is_added(
    app: Flask, default_list: MailingList, subscribed: Subscribed, deliver: Deliver
) -> None:
    """No tracking: hrefs are exactly the author's plus our two footer links, and the
    only image is the one the author put in."""
    written = [
        "https://inklusio.dk/nyt?utm_source=ingen&side=2#afsnit",
        "https://example.org/a/b/c.html",
        "mailto:kontakt@inklusio.dk",
    ]
    logo = f"{ORIGIN}/static/logo.png"
    markdown = (
        f"Læs [nyt]({written[0]}), [mere]({written[1]}) eller [skriv]({written[2]}).\n\n"
        f"![Logo]({logo})\n"
    )
    subscribed("reader@example.org")
    campaign = create_campaign("nyhedsbrev", "Links", markdown)
    start_campaign(campaign.id)

    (mail,) = deliver()

    html = html_of(mail)
    unsubscribe = str(mail["List-Unsubscribe"]).strip("<>")
    manage = ORIGIN + link_path(mail, "manage")
    assert attribute_values(html, "a", "href") == [*written, unsubscribe, manage]
    assert attribute_values(html, "img", "src") == [logo]
    for url in written:
        assert url in text_of(mail)
    for _, attrs in parse_html(html).tags:  # no other reference to anything at all
        for name in ("src", "background", "srcset", "action", "data"):
            assert name not in attrs or attrs[name] == logo


def test_css_is_inlined_for_mail_clients(app: Flask) -> None:
    page = render_campaign("Emne", "# Titel\n\n[link](https://inklusio.dk/)", "Nyhedsbrev").html

    assert "<style" not in page.lower()
    tags = parse_html(page).tags
    body_style = next(attrs for tag, attrs in tags if tag == "body")["style"]
    assert body_style is not None
    assert "font-family" in body_style
    link_style = next(a for t, a in tags if t == "a" and a.get("href") == "https://inklusio.dk/")
    assert "color" in (link_style.get("style") or "")
    assert all(attrs.get("style") for tag, attrs in tags if tag == "div")


# --- the layout and the personal parts -----------------------------------------------


def test_layout_carries_sender_identity_address_reason_and_links_in_html_and_text(
    app: Flask, make_list: Callable[..., MailingList], subscribed: Subscribed, deliver: Deliver
) -> None:
    # Everyone here reads the default language, so the layout is rendered once, in it.
    app.config["BABEL_DEFAULT_LOCALE"] = "en"
    app.config["ORGANIZATION_NAME"] = "Foreningen Ærø & Co"
    app.config["POSTAL_ADDRESS"] = "Vestergade 7, 5970 Ærøskøbing"
    make_list(slug="nyhedsbrev", name="Ugebrevet", default=True)
    subscribed("reader@example.org")
    campaign = create_campaign("nyhedsbrev", "Ugens nyt", "Indhold.\n")
    start_campaign(campaign.id)

    (mail,) = deliver()

    text, html = text_of(mail), html_of(mail)
    shown = visible_text(html)
    unsubscribe = str(mail["List-Unsubscribe"]).strip("<>")
    manage = ORIGIN + link_path(mail, "manage")
    assert unsubscribe.startswith(f"{ORIGIN}/unsubscribe/")
    for needle in ("Foreningen Ærø & Co", "Vestergade 7, 5970 Ærøskøbing", "Ugebrevet"):
        assert needle in text
        assert needle in shown
    assert "Foreningen Ærø &amp; Co" in html  # escaped in HTML, not raw
    assert "because you subscribed to Ugebrevet" in text
    assert "because you subscribed to Ugebrevet" in shown
    assert unsubscribe in text
    assert manage in text
    assert unsubscribe in attribute_values(html, "a", "href")
    assert manage in attribute_values(html, "a", "href")


def test_name_is_filled_in_per_recipient_escaped_in_html_and_empty_without_one(
    app: Flask, default_list: MailingList, subscribed: Subscribed, deliver: Deliver
) -> None:
    evil = '<b>Eve & "Mallory"</b>'
    subscribed("eve@example.org", name=evil)
    subscribed("anon@example.org")
    campaign = create_campaign("nyhedsbrev", "Hej", "Hej {{ name }} og {{name}}!\n")
    start_campaign(campaign.id)

    mails = {str(m["To"].addresses[0].addr_spec): m for m in deliver()}

    eve, anon = mails["eve@example.org"], mails["anon@example.org"]
    assert f"Hej {evil} og {evil}!" in text_of(eve)
    escaped = "&lt;b&gt;Eve &amp; &quot;Mallory&quot;&lt;/b&gt;"
    assert f"Hej {escaped} og {escaped}!" in html_of(eve)
    assert "<b>Eve" not in html_of(eve)
    assert all(tag != "b" for tag, _ in parse_html(html_of(eve)).tags)
    assert f"Hej {evil} og {evil}!" in visible_text(html_of(eve))
    assert "Hej  og !" in text_of(anon)
    assert "Hej  og !" in html_of(anon)
    for mail in (eve, anon):
        for part in (text_of(mail), html_of(mail)):
            assert "{{" not in part
            assert compose.NAME not in part
            assert compose.UNSUBSCRIBE_URL not in part
            assert compose.MANAGE_URL not in part


def test_a_name_that_looks_like_a_placeholder_stays_as_written(app: Flask) -> None:
    template = f"{compose.NAME} | {compose.UNSUBSCRIBE_URL} | {compose.MANAGE_URL}"

    filled = personalise(
        template,
        name=compose.MANAGE_URL,
        unsubscribe_url="https://u.example/1",
        manage_url="https://m.example/2",
        is_html=False,
    )

    assert filled == f"{compose.MANAGE_URL} | https://u.example/1 | https://m.example/2"


def test_rendering_happens_once_per_campaign_and_a_later_edit_changes_nothing(
    app: Flask,
    default_list: MailingList,
    subscribed: Subscribed,
    deliver: Deliver,
    smtp_server: SMTPServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for n in range(3):
        subscribed(f"reader{n}@example.org")
    smtp_server.reset()
    renders: list[str] = []
    real_render = service.render_campaign

    def counting(*args: Any, **kwargs: Any) -> compose.RenderedCampaign:
        renders.append(args[0])
        return real_render(*args, **kwargs)

    monkeypatch.setattr(service, "render_campaign", counting)
    campaign = create_campaign("nyhedsbrev", "Udgave", "Første udgave af teksten.\n")
    campaign_id = campaign.id
    start_campaign(campaign_id)
    db.session.commit()
    stored = db.session.get(Campaign, campaign_id)
    assert stored is not None
    assert stored.rendered_html is not None
    assert "Første udgave af teksten." in stored.rendered_html
    assert stored.rendered_text is not None
    assert "Første udgave af teksten." in stored.rendered_text
    assert compose.NAME not in stored.rendered_text  # no personal part is baked in

    app.config["DELIVERY_BATCH_SIZE"] = 1
    db.session.commit()
    first = send_deliveries(app, "test-worker")
    assert first.sent == 1
    stored = db.session.get(Campaign, campaign_id)
    assert stored is not None
    stored.body_markdown = "Anden udgave, skrevet efter start."
    db.session.commit()
    later = deliver()

    assert len(later) == 2
    assert len(smtp_server.messages) == 3
    for mail in smtp_server.messages:
        assert "Første udgave af teksten." in text_of(mail)
        assert "Første udgave af teksten." in html_of(mail)
        assert "Anden udgave" not in text_of(mail) + html_of(mail)
    assert renders == ["Udgave"]  # once, for three recipients


# --- MIME ------------------------------------------------------------------------------

SENDER = "Inklusio Nyhedsbrev æøå <nyhedsbrev@newsletter.test>"
SUBJECT = "Nyt fra Ærøskøbing: blåbærgrød på menuen"
UNSUBSCRIBE = f"{ORIGIN}/unsubscribe/abc.def-ghi_jkl"
TEXT = (
    "Kære læser, æøå ÆØÅ\n\n"
    + "en meget lang linje " * 80  # 1,600 characters, no line break
    + "\n=lighedstegn= og mellemrum i enden   \n.punktum først\nslut\n"
)
HTML = "<p>" + "æøå " * 400 + "</p>\n<p>Hej &amp; farvel</p>\n"


def build(**overrides: Any) -> bytes:
    envelope = mime.make_envelope(
        overrides.pop("sender", SENDER),
        SUBJECT,
        "Nyhedsbrev <nyhedsbrev.newsletter.test>",
        "newsletter.test",
        overrides.pop("mailto", ""),
    )
    values: dict[str, Any] = {
        "to_address": "jorgen@example.org",
        "to_name": "Jørgen Ærø",
        "unsubscribe_url": UNSUBSCRIBE,
        "text": TEXT,
        "html": HTML,
    }
    values.update(overrides)
    return mime.build_message(envelope, **values)


def test_message_parses_as_multipart_alternative_with_utf8_quoted_printable_parts() -> None:
    raw = build()

    message = parse(raw)
    assert message.get_content_type() == "multipart/alternative"
    assert message.defects == []
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    for part in parts:
        assert isinstance(part, EmailMessage)
        assert part.defects == []
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
    assert lf(parts[0].get_content()) == TEXT
    assert lf(parts[1].get_content()) == HTML


def test_message_is_7bit_crlf_and_no_line_exceeds_998_bytes() -> None:
    raw = build()

    assert raw.isascii()  # To and everything else encoded; no SMTPUTF8 needed
    assert raw.endswith(b"\r\n")
    assert re.search(rb"(?<!\r)\n|\r(?!\n)", raw) is None  # only CRLF, no bare CR or LF
    lines = raw.split(b"\r\n")
    assert max(len(line) for line in lines) <= 998
    assert max(len(line) for line in lines[lines.index(b"") :]) <= 76  # QP wrapped the body
    assert "en meget lang linje " * 80 in lf(parse(raw).get_body(("plain",)).get_content())


def test_a_lone_carriage_return_does_not_reach_the_wire_raw() -> None:
    """A body with old Mac line ends (bare CR) used to go out with bare CRs in it."""
    raw = build(text="første\rlinje\r\nanden\n", html="<p>a</p>\r<p>b</p>")

    assert re.search(rb"(?<!\r)\n|\r(?!\n)", raw) is None
    message = parse(raw)
    assert lf(message.get_body(("plain",)).get_content()) == "første\nlinje\nanden\n"


def test_headers_identity_subject_date_message_id_and_list_headers() -> None:
    before = datetime.now(UTC)
    raw, other = build(), build()

    message = parse(raw)
    (sender,) = message["From"].addresses
    assert (sender.display_name, sender.addr_spec) == (
        "Inklusio Nyhedsbrev æøå",
        "nyhedsbrev@newsletter.test",
    )
    assert b"=?utf-8?" in header_line(raw, b"From")
    (to,) = message["To"].addresses
    assert (to.display_name, to.addr_spec) == ("Jørgen Ærø", "jorgen@example.org")
    assert b"=?utf-8?" in header_line(raw, b"To")  # RFC 2047, the address stays ASCII
    assert message["Subject"] == SUBJECT
    assert b"=?utf-8?" in header_line(raw, b"Subject")
    sent = parsedate_to_datetime(message["Date"])
    assert before - timedelta(seconds=2) <= sent <= datetime.now(UTC) + timedelta(seconds=2)
    assert message["MIME-Version"] == "1.0"
    ids = {str(parse(r)["Message-ID"]) for r in (raw, other)}
    assert len(ids) == 2  # unique per message
    assert all(re.fullmatch(r"<[0-9a-f]{32}@newsletter\.test>", i) for i in ids)
    assert message["List-Id"] == "Nyhedsbrev <nyhedsbrev.newsletter.test>"
    assert message["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_list_unsubscribe_adds_mailto_when_configured() -> None:
    message = parse(build(mailto="afmeld@newsletter.test"))

    assert message["List-Unsubscribe"] == (
        f"<{UNSUBSCRIBE}>, <mailto:afmeld@newsletter.test?subject=unsubscribe>"
    )


def test_a_non_ascii_local_part_gives_a_utf8_to_header() -> None:
    raw = build(to_address="søren@example.org", to_name="Søren Ø")

    assert header_line(raw, b"To") == "To: Søren Ø <søren@example.org>".encode()
    assert str(parse(raw)["To"]) == "Søren Ø <søren@example.org>"
    assert header_line(raw, b"Subject").isascii()  # the rest stays encoded


def test_a_plain_ascii_recipient_without_name_is_written_as_is() -> None:
    raw = build(to_name="")

    assert header_line(raw, b"To") == b"To: jorgen@example.org"


def test_delivered_campaign_mail_has_the_list_headers_and_mailto(
    app: Flask, default_list: MailingList, subscribed: Subscribed, deliver: Deliver
) -> None:
    app.config["MAIL_UNSUBSCRIBE_MAILTO"] = "afmeld@newsletter.test"
    subscribed("a@example.org")
    subscribed("b@example.org")
    campaign = create_campaign("nyhedsbrev", SUBJECT, "Hej\n", sender=SENDER)
    start_campaign(campaign.id)

    mails = deliver()

    assert len(mails) == 2
    assert len({str(m["Message-ID"]) for m in mails}) == 2
    for mail in mails:
        assert mail["Subject"] == SUBJECT
        assert str(mail["From"]) == SENDER
        assert str(mail["Message-ID"]).endswith("@newsletter.test>")
        url = str(mail["List-Unsubscribe"]).split(",")[0].strip("<> ")
        assert url.startswith(f"{ORIGIN}/unsubscribe/")
        assert str(mail["List-Unsubscribe"]).endswith(
            ", <mailto:afmeld@newsletter.test?subject=unsubscribe>"
        )
        assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_campaign_to_a_non_ascii_local_part_is_delivered_over_smtputf8(
    app: Flask,
    default_list: MailingList,
    subscribed: Subscribed,
    deliver: Deliver,
    smtp_server: SMTPServer,
) -> None:
    subscribed("søren@example.org", name="Søren Ø")
    subscribed("plain@example.org")
    campaign = create_campaign("nyhedsbrev", "Hej æøå", "Hej {{ name }}\n")
    start_campaign(campaign.id)
    before = len(smtp_server.recorder.received)

    mails = deliver()

    received = smtp_server.recorder.received[before:]
    assert sorted(r.rcpt_tos[0] for r in received) == ["plain@example.org", "søren@example.org"]
    soren = next(r for r in received if r.rcpt_tos == ["søren@example.org"])
    assert "To: Søren Ø <søren@example.org>".encode() in soren.raw
    assert "Hej Søren Ø" in text_of(soren.message)
    assert len(mails) == 2


# --- header injection ------------------------------------------------------------------


@pytest.mark.parametrize("newline", ["\r\n", "\n", "\r", "\u2028"], ids=["crlf", "lf", "cr", "ls"])
@pytest.mark.parametrize("field", ["subject", "sender"])
def test_header_injection_through_subject_or_sender_is_refused(
    app: Flask, default_list: MailingList, field: str, newline: str
) -> None:
    values = {"subject": "Nyt", "sender": "nyhedsbrev@newsletter.test"}
    values[field] += f"{newline}Bcc: victim@example.org"

    with pytest.raises(InvalidInput) as refused:
        create_campaign("nyhedsbrev", values["subject"], "Hej\n", sender=values["sender"])

    assert refused.value.field == field
    assert campaign_count() == 0  # no campaign was created
