"""Mail hygiene: what spam filters and plain-text readers see in our mail.

- Quoted-printable lines are at most 76 characters (RFC 2045 6.7; SpamAssassin
  MIME_QP_LONG_LINE), in every kind of mail the product sends, whatever the
  content: long words, long URLs, non-ASCII text, lines ending in a space or
  a tab (where ``binascii.b2a_qp`` alone writes 77 or 78 characters).
- The text part of a campaign is readable text made from the Markdown's
  token stream, not the Markdown source: ``**bold**`` is "bold", a link is
  "text (url)", and headings, lists, quotes and code read as text.
- An API signup without a ``locale`` reads the site's default language (Danish):
  a Danish campaign's layout is Danish for them.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable
from email.message import EmailMessage

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from newsletter.campaigns.compose import markdown_to_text, render_campaign
from newsletter.campaigns.mime import EncodedBody
from newsletter.campaigns.service import create_campaign, queue_test_mail, start_campaign
from newsletter.extensions import db
from newsletter.ledger import Evidence, append_event
from newsletter.mail.message import quoted_printable
from newsletter.mail.outbox import enqueue
from newsletter.models import Channel, MailingList, OutboxKind, Role, StaffUser, Subscriber
from newsletter.worker.sealing import seal_step

from .fixtures.intake import drain_intake
from .fixtures.mailflow import Deliver, html_of, link_path, text_of
from .fixtures.properties import PROPERTIES
from .fixtures.smtp import SMTPServer

MAX_QP = 76
UNIT = settings(PROPERTIES, max_examples=300)
Subscribed = Callable[..., EmailMessage]


def long_qp_lines(encoded: bytes) -> list[bytes]:
    """The lines of an encoded body longer than RFC 2045 allows."""
    return [line for line in encoded.split(b"\r\n") if len(line) > MAX_QP]


def decoded(encoded: bytes) -> str:
    """Quoted-printable bytes (CRLF) back to text with LF line ends."""
    return binascii.a2b_qp(encoded).decode("utf-8").replace("\r\n", "\n")


# Lines that end in a space or a tab just where b2a_qp's line fills up, long
# words, a long URL, Danish and a four-byte character.
HARD_LINES = [
    *("a" * n + " " for n in range(70, 80)),
    *("ø" * n + "\t" for n in range(20, 27)),
    "Læs mere på https://inklusio.dk/nyheder/" + "meget-lang-sti-" * 12 + "?x=1&y=ø",
    "Donaudampfschifffahrtsgesellschaftskapitänswitwenrentenversicherungsanstalt" * 3,
    "💌" * 40,
    "=" * 100,
    ". starts with a dot and is long enough to be folded by the encoder " * 2,
]
HARD_TEXT = "\n".join(HARD_LINES)


# --- quoted-printable --------------------------------------------------------------


def test_b2a_qp_alone_writes_lines_too_long_for_this_text() -> None:
    """The case is real: the library's encoder alone goes past 76 on these lines."""
    raw = binascii.b2a_qp(HARD_TEXT.encode("utf-8"))
    assert max(map(len, raw.split(b"\n"))) > MAX_QP


def test_quoted_printable_lines_fit_and_decode_to_the_text() -> None:
    encoded = quoted_printable(HARD_TEXT)
    assert long_qp_lines(encoded) == []
    assert decoded(encoded) == HARD_TEXT


qp_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(list("ab =.\t\n\r -øæå€💌")),
        st.characters(codec="utf-8"),
    ),
    max_size=600,
)


@given(text=qp_text)
@example(text="a" * 75 + " ")
@example(text="a" * 74 + "\t\nb")
@example(text="x" * 73 + "=" + "\n")
@UNIT
def test_quoted_printable_never_writes_a_long_line(text: str) -> None:
    encoded = quoted_printable(text)
    assert long_qp_lines(encoded) == []
    assert b"\n" not in encoded.replace(b"\r\n", b"")  # CRLF only
    assert decoded(encoded) == text.replace("\r\n", "\n").replace("\r", "\n")


single_line = st.text(
    alphabet=st.one_of(st.sampled_from(list("a =ø\t💌")), st.characters(codec="utf-8")),
    max_size=120,
).map(lambda text: "".join(ch for ch in text if ch not in "\r\n\x85\u2028\u2029"))


@given(
    parts=st.lists(qp_text.map(lambda t: t.replace("\r", "")), min_size=1, max_size=5),
    value=single_line,
)
@UNIT
def test_a_filled_campaign_body_never_writes_a_long_line(parts: list[str], value: str) -> None:
    """The send loop's pre-encoded template with a personal value in each slot."""
    slots = ["NAME"] * (len(parts) - 1)
    body = EncodedBody.encode(parts, slots).fill({"NAME": value})
    assert long_qp_lines(body) == []
    assert decoded(body) == value.join(parts)


def body_lines(raw: bytes) -> list[bytes]:
    """The lines of a received message's body (after the header)."""
    return raw.partition(b"\r\n\r\n")[2].split(b"\r\n")


def test_every_kind_of_mail_has_short_quoted_printable_lines(
    app: Flask,
    make_list: Callable[..., MailingList],
    subscribed: Subscribed,
    deliver: Deliver,
    smtp_server: SMTPServer,
    make_staff: Callable[..., StaffUser],
) -> None:
    """Confirmation, welcome, data copy, proof of consent, campaign test, witness
    mail and the campaign itself, each full of lines that are hard to encode."""
    app.config["POSTAL_ADDRESS"] = HARD_LINES[0] + "Æblegade 1"
    make_list("nyhedsbrev", "Nyhedsbrev " + HARD_LINES[3][:40], HARD_TEXT, default=True)
    subscribed("reader@example.org", name="Søren " + "ø" * 60)
    subscriber = db.session.scalars(select(Subscriber)).one()
    enqueue(OutboxKind.DATA_EXPORT, subscriber)
    enqueue(OutboxKind.DATA_EXPORT, subscriber, proof=True)
    campaign = create_campaign("nyhedsbrev", "Nyt " + HARD_LINES[5], HARD_TEXT + "\n\n{{ name }}")
    queue_test_mail(campaign.id, make_staff(Role.EDITOR))
    db.session.commit()
    deliver()
    start_campaign(campaign.id)
    deliver()
    app.config["LEDGER_WITNESS_MAILTO"] = "witness@example.org"
    append_event(event="requested", channel=Channel.API, subscriber=subscriber, evidence=Evidence())
    db.session.commit()
    seal_step(always=True)
    deliver()

    received = smtp_server.recorder.received
    subjects = [str(r.message["Subject"]) for r in received]
    assert len(received) == 7, subjects  # confirm, welcome, 2 data, test, campaign, witness
    assert sum("[Test]" in s for s in subjects) == 1
    assert sum(r.rcpt_tos == ["witness@example.org"] for r in received) == 1
    for mail in received:
        too_long = [line for line in body_lines(mail.raw) if len(line) > MAX_QP]
        assert too_long == [], (mail.message["Subject"], too_long)
    # The welcome carries the consent text as written, trailing spaces too: the
    # very lines b2a_qp alone would have written too long.
    welcome = next(
        r.message for r in received if r.message["List-Id"] and not r.message["Feedback-ID"]
    )
    welcome_text = text_of(welcome).replace("\r\n", "\n")
    assert "a" * 79 + " \n" in welcome_text
    assert max(map(len, binascii.b2a_qp(welcome_text.encode()).split(b"\n"))) > MAX_QP


# --- the campaign's text part ------------------------------------------------------

MARKDOWN = """# Nyt fra os

Hej {{ name }}! Det er **vigtigt** og *lidt* ~~ikke~~ nyt.
Læs [mere her](https://inklusio.dk/nyt "titel") eller <https://inklusio.dk/direkte>,
skriv til [os](mailto:hej@inklusio.dk) eller <hej@inklusio.dk>.

## Program

- første punkt
- andet punkt med `kode`
  1. under et
  2. under to

3. tre
4. fire

> Et citat
> over to linjer

```
def hej():
    return "**ikke fed**"
```

| Dag | Sted |
|-----|------|
| Mandag | [Aarhus](https://inklusio.dk/aarhus) |

---

![Logo](https://newsletter.test/logo.png) slut.
"""

EXPECTED_TEXT = """Nyt fra os
==========

Hej NAME! Det er vigtigt og lidt ~~ikke~~ nyt.
Læs mere her (https://inklusio.dk/nyt) eller https://inklusio.dk/direkte,
skriv til os (mailto:hej@inklusio.dk) eller hej@inklusio.dk.

Program
-------

- første punkt
- andet punkt med kode
  1. under et
  2. under to

3. tre
4. fire

> Et citat
> over to linjer

    def hej():
        return "**ikke fed**"

Dag | Sted
Mandag | Aarhus (https://inklusio.dk/aarhus)

* * *

Logo slut."""


def test_markdown_becomes_readable_text(app: Flask) -> None:
    with app.test_request_context():
        assert markdown_to_text(MARKDOWN.replace("{{ name }}", "NAME")) == EXPECTED_TEXT


@pytest.mark.parametrize(
    ("markdown", "text"),
    [
        ("**bold**", "bold"),
        ("[text](https://x.example/a_b)", "text (https://x.example/a_b)"),
        ("[](https://x.example/)", "https://x.example/"),
        ("[**fed** link](https://x.example/)", "fed link (https://x.example/)"),
        ("[rel](/a/b)", "rel"),  # no scheme: nowhere a mail reader can go
        ("[x](javascript:alert(1))", "[x](javascript:alert(1))"),  # not a link at all
        ("a  \nb", "a\nb"),
        ("&amp; &lt;b&gt;", "& <b>"),
        ("<b>raw</b>", "<b>raw</b>"),  # raw HTML is text, as in the HTML part
        ("- a\n\n  b\n- c", "- a\n\n  b\n\n- c"),
        ("1. a\n1. b", "1. a\n2. b"),
        ("7. a\n8. b", "7. a\n8. b"),
        ("-\n- x", "-\n- x"),
        ("> > deep", "> > deep"),
        ("    code", "    code"),
        ("Title\n===", "Title\n====="),
        ("### Tre", "Tre"),
    ],
)
def test_each_markdown_construct(app: Flask, markdown: str, text: str) -> None:
    with app.test_request_context():
        assert markdown_to_text(markdown) == text


link_text = st.text(alphabet="abcæøå 123", min_size=1, max_size=12).filter(str.strip)
url = st.builds(
    lambda host, path: f"https://{host}.example/{path}",
    st.text(alphabet="abcdefgh", min_size=1, max_size=8),
    st.text(alphabet="abc-_/.~%", max_size=20),
)
piece = st.one_of(
    st.builds(lambda t, u: ("link", f"[{t}]({u})", u), link_text, url),
    st.builds(lambda t, u: ("link", f'[**{t}**]({u} "t")', u), link_text, url),
    st.builds(lambda u: ("link", f"<{u}>", u), url),
    st.sampled_from(
        [
            ("text", "**fed**", ""),
            ("text", "_skrå_", ""),
            ("text", "\n\n", ""),
            ("text", "\n- ", ""),
            ("text", "\n1. ", ""),
            ("text", "\n> ", ""),
            ("text", "\n# ", ""),
            ("text", "\n    ", ""),
            ("text", "\n```\n", ""),
            ("text", "`kode`", ""),
            ("text", " | ", ""),
            ("text", "\n|---|---|\n", ""),
        ]
    ),
    st.text(alphabet="abc *_[]()<>#>-`|\n\\!", max_size=10).map(lambda t: ("text", t, "")),
)


@given(pieces=st.lists(piece, max_size=25))
@UNIT
def test_no_link_is_left_as_markdown(app: Flask, pieces: list[tuple[str, str, str]]) -> None:
    """Whatever surrounds them, the links markdown-it reads in the source are
    written as text and URL, never as Markdown link syntax."""
    from newsletter.campaigns.compose import _markdown

    source = " ".join(markdown for _, markdown, _ in pieces)
    tokens = [
        token for block in _markdown.parse(source) for token in [block, *(block.children or ())]
    ]
    hrefs = {str(t.attrGet("href")) for t in tokens if t.type == "link_open"}
    # What the author wrote as literal text (in code, or not a link): the only
    # place link syntax may come from.
    literal = "\n".join(
        t.content for t in tokens if t.type in ("text", "code_inline", "fence", "code_block")
    )
    with app.test_request_context():
        text = markdown_to_text(source)
    for href in hrefs:
        assert text.count(f"]({href}") <= literal.count(f"]({href}")
        assert text.count(f"<{href}>") <= literal.count(f"<{href}>")
        assert href in text


@given(markdown=st.text(alphabet=st.characters(codec="utf-8"), max_size=2000))
@example(markdown="> " * 5000 + "x")
@example(markdown="*" * 20000 + "x" + "*" * 20000)
@example(markdown="[" * 20000 + "x" + "](https://a.example)" * 200)
@example(markdown="- " * 3000 + "x")
@example(markdown="\x00\r\n\u2028|a|\n|-|\n|\x00|")
@UNIT
def test_any_markdown_becomes_text_without_an_error(app: Flask, markdown: str) -> None:
    with app.test_request_context():
        text = markdown_to_text(markdown)
    assert isinstance(text, str)


@given(
    markdown=st.text(alphabet=st.sampled_from(list("ab *_[]()<>#>-`|!\n\tø💌:/.=")), max_size=400)
)
@example(markdown="[a](https://x.example/" + "y" * 200 + ")")
@settings(PROPERTIES, max_examples=80)
def test_any_campaign_renders_to_short_quoted_printable_lines(app: Flask, markdown: str) -> None:
    """The whole text and HTML of a campaign, whatever its Markdown, encode to
    lines of at most 76 characters."""
    with app.test_request_context():
        rendered = render_campaign("Emne", markdown, "Nyhedsbrev")
    for body in (rendered.text, rendered.html):
        assert long_qp_lines(quoted_printable(body)) == []


def test_the_campaign_text_part_is_readable_text(
    default_list: MailingList, subscribed: Subscribed, deliver: Deliver
) -> None:
    subscribed("reader@example.org", name="Reader")
    campaign = create_campaign("nyhedsbrev", "Nyt", MARKDOWN)
    start_campaign(campaign.id)

    (mail,) = deliver()

    text = text_of(mail).replace("\r\n", "\n")
    assert EXPECTED_TEXT.replace("NAME", "Reader") in text
    assert "**" not in text.replace('"**ikke fed**"', "")  # only the code block's
    assert "](" not in text
    assert text.index("Logo slut.") < text.index("\n--\n")  # the footer follows
    assert link_path(mail, "unsubscribe") in text
    assert '<a href="https://inklusio.dk/nyt"' in html_of(mail)  # the HTML part as before


def test_the_stored_rendering_has_the_readable_text(app: Flask) -> None:
    with app.test_request_context():
        rendered = render_campaign("Emne", "Se [her](https://inklusio.dk/).", "Nyhedsbrev")
    assert "Se her (https://inklusio.dk/)." in rendered.text
    assert "[her]" not in rendered.text


# --- the language of an API signup ---------------------------------------------------


def test_an_api_signup_without_locale_reads_the_default_language(
    client: FlaskClient, default_list: MailingList, deliver: Deliver
) -> None:
    """No ``locale`` in the JSON (and an English Accept-Language, which the API's own
    answers follow): the subscriber reads Danish, the confirmation and the Danish
    campaign's layout are Danish."""
    response = client.post(
        "/api/v1/subscriptions",
        data=json.dumps({"email": "api@example.org"}),
        content_type="application/json",
        headers={"Accept-Language": "en"},
    )
    assert response.status_code == 202
    db.session.commit()
    drain_intake()
    (confirmation,) = deliver()
    assert confirmation["Subject"] == "Bekræft din tilmelding"
    assert db.session.scalars(select(Subscriber.locale)).one() == "da"
    db.session.commit()
    assert client.post(link_path(confirmation, "confirm")).status_code == 200
    deliver()  # the welcome
    campaign = create_campaign("nyhedsbrev", "Nyt fra Inklusio", "Hej {{ name }}!")
    start_campaign(campaign.id)

    (mail,) = deliver()

    text = text_of(mail)
    assert "Du får denne mail, fordi du har tilmeldt dig Nyhedsbrev." in text
    assert "Afmeld: " in text
    assert "You receive this mail" not in text + html_of(mail)
    assert '<html lang="da">' in html_of(mail)


def test_an_api_signup_without_locale_follows_the_configured_default(
    app: Flask, client: FlaskClient, default_list: MailingList, deliver: Deliver
) -> None:
    """The default is the site's setting, not a fixed language."""
    app.config["BABEL_DEFAULT_LOCALE"] = "en"
    response = client.post(
        "/api/v1/subscriptions",
        data=json.dumps({"email": "api@example.org"}),
        content_type="application/json",
        headers={"Accept-Language": "da"},
    )
    assert response.status_code == 202
    db.session.commit()
    drain_intake()
    (confirmation,) = deliver()
    assert confirmation["Subject"] == "Please confirm your subscription"
    assert db.session.scalars(select(Subscriber.locale)).one() == "en"
    db.session.commit()
