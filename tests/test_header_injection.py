"""Header injection: no text we are given can add a header, a line break or a body.

The email package decodes RFC 2047 encoded words wherever it meets them, even in
an address's local part or a quoted name, so "=?utf-8?b?DQo...?=" once came out
of our To header as CR LF, a Content-Type and a body of the sender's choosing
(and a subject or list name did the same to Subject and List-Id). Every header
is now written by one function, ``mail.headers.header_line``, and the input
rules refuse what no mailbox, subject or list name needs.

Each field that reaches a header is fuzzed through every way in (hosted form,
JSON API, console forms, services, CLI): the answer is a refusal naming the
field, or mail whose header set is exactly ours. The SMTP fixture holds every
received mail to that shape (tests/fixtures/smtp.py, ``mail_problems``).
"""

from __future__ import annotations

import ast
import base64
from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parseaddr
from pathlib import Path
from typing import TypeVar

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from flask_babel import force_locale
from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from newsletter.campaigns.mime import build_message, make_envelope
from newsletter.campaigns.service import create_campaign, queue_test_mail, start_campaign
from newsletter.extensions import db
from newsletter.mail.headers import HEADER_NAMES, Mailbox, UnsafeHeader, header_line, readable
from newsletter.mail.message import compose_mail
from newsletter.models import (
    Campaign,
    MailingList,
    OutboxMessage,
    OutboxStatus,
    StaffUser,
    Subscriber,
)
from newsletter.subscriptions.lists import update_list
from newsletter.validation import InvalidInput, normalise_email

from .conftest import ORIGIN
from .fixtures.intake import drain_intake
from .fixtures.mailflow import Deliver, html_of
from .fixtures.properties import PROPERTIES
from .fixtures.smtp import SMTPServer, mail_problems
from .fixtures.staff import StaffClient

T = TypeVar("T")
FUZZ = settings(PROPERTIES, max_examples=60)
UNIT = settings(FUZZ, max_examples=400)

# The reproductions from the report.
REPRO_EMAIL = "=?utf-8?b?DQpDb250ZW50LVR5cGU6dGV4dC9odG1sDQoNCjxoMT5IaQ==?=@attacker.example"
REPRO_TEXT = "=?utf-8?q?x=0D=0ABcc:_x@evil.example?="
# A subject that, decoded, adds a Reply-To and an HTML body with a foreign image.
FOREIGN_IMAGE = '<img src="https://evil.example/p.png">'
REPLY_TO_PAYLOAD = (
    f"x\r\nReply-To: x@evil.example\r\nContent-Type: text/html\r\n\r\n{FOREIGN_IMAGE}"
)
BODY = "Hej {{ name }}\n\nNyt fra os.\n"


def b_word(text: str, charset: str = "utf-8") -> str:
    """``text`` as an RFC 2047 B-encoded word."""
    data = text.encode(charset, "replace")
    return f"=?{charset}?b?{base64.b64encode(data).decode('ascii')}?="


def q_word(text: str, charset: str = "utf-8") -> str:
    """``text`` as an RFC 2047 Q-encoded word."""
    out = []
    for byte in text.encode(charset, "replace"):
        char = chr(byte)
        plain = char.isascii() and char.isalnum()
        out.append("_" if char == " " else char if plain else f"={byte:02X}")
    return f"=?{charset}?q?{''.join(out)}?="


def half_and_half(
    first: st.SearchStrategy[str], second: st.SearchStrategy[str]
) -> st.SearchStrategy[str]:
    """Each strategy for half the examples (st.one_of flattens nested one_ofs and
    picks among all their branches alike)."""
    return st.booleans().flatmap(lambda pick: first if pick else second)


HEADER_LINES = [
    "Bcc: x@evil.example",
    "Reply-To: x@evil.example",
    "Content-Type: text/html",
    "Subject: spoofed",
    "",
    FOREIGN_IMAGE,
]
# Text with line breaks and header lines in it, as an attacker would encode.
payloads = st.builds(
    lambda head, lines, tail: head + "".join(nl + line for nl, line in lines) + tail,
    st.text(max_size=6),
    st.lists(
        st.tuples(st.sampled_from(["\r\n", "\n", "\r", "\x00"]), st.sampled_from(HEADER_LINES)),
        min_size=1,
        max_size=4,
    ),
    st.text(max_size=6),
)
encoded_words = st.builds(
    lambda encode, text, charset: encode(text, charset),
    st.sampled_from([b_word, q_word]),
    payloads,
    st.sampled_from(["utf-8", "UTF-8", "iso-8859-1"]),
)
lone_surrogates = st.builds(
    lambda head, code, tail: head + chr(code) + tail,
    st.text(max_size=5),
    st.integers(0xD800, 0xDFFF),
    st.text(max_size=5),
)
# What a browser can send: anything but lone surrogates.
hostile_text = st.one_of(
    st.sampled_from([REPRO_TEXT, q_word(REPLY_TO_PAYLOAD), b_word(REPLY_TO_PAYLOAD)]),
    st.builds(
        lambda a, w, b: a + w + b,
        st.sampled_from(["", "Nyt: "]),
        encoded_words,
        st.text(max_size=4),
    ),
    payloads,
    st.text(max_size=60),
)
# Text the rules let through, to be sent: any visible text, and near misses
# of an encoded word.
NEAR_MISSES = ["Hvad er 1+1=?", "=?", "?=", "=?utf-8?x?abc?=", "a =? b ?= c", "Nyt ?= =? nu"]
allowed_text = st.one_of(
    st.sampled_from(NEAR_MISSES),
    st.text(
        alphabet=st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=60
    ),
)
header_text = half_and_half(hostile_text, allowed_text)
# A subscriber's name may be an encoded word: it is sent, made harmless.
name_text = half_and_half(st.one_of(allowed_text, encoded_words), hostile_text)
domains = st.sampled_from(["attacker.example", "example.org", "eksempel.dk"])
hostile_email = st.one_of(
    st.just(REPRO_EMAIL),
    st.builds(lambda word, domain: f"{word}@{domain}", encoded_words, domains),
    st.builds(lambda local, domain: f"{local}@{domain}", hostile_text, domains),
    hostile_text,
)
# Addresses a person may have, so that mail is sent and its headers checked.
good_email = st.builds(
    lambda local, n, domain: f"{local}{n}@{domain}",
    st.sampled_from(["reader", "søren", "a.b+c", "x=y"]),
    st.integers(0, 10**6),
    domains,
)
any_email = half_and_half(good_email, hostile_email)


def parsed(raw: bytes) -> EmailMessage:
    """A mail as a receiver's email package reads it."""
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def attempt(call: Callable[[], T]) -> tuple[T | None, InvalidInput | None]:
    """(result, None), or (None, the refusal) with the session rolled back."""
    try:
        return call(), None
    except InvalidInput as refused:
        db.session.rollback()
        return None, refused


def same_name(display_name: str, text: str) -> bool:
    """Whether a parsed display name reads as ``text`` made readable.

    A long name is sent as several encoded words; CPython's address parser keeps
    the white space between them, which RFC 2047 (and mail programs) drop, so
    spaces are not compared.
    """
    return display_name.replace(" ", "") == readable(text).replace(" ", "")


def assert_only_our_mail(smtp_server: SMTPServer) -> None:
    """Every mail received so far has exactly our header set and body shape."""
    for received in smtp_server.recorder.received:
        assert mail_problems(received.raw, received.rcpt_tos) == [], received.raw[:800]


# --- the one header function ----------------------------------------------------------

any_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=300)


@given(name=st.sampled_from(sorted(HEADER_NAMES - {"Date", "Message-ID"})), text=any_text)
@example(name="Subject", text=REPRO_TEXT)
@example(name="To", text=REPRO_TEXT)
@example(name="List-Id", text=REPRO_TEXT)
@example(name="Subject", text="\ud800\r\nBcc: x@evil.example\x00" + "ø" * 600)
@UNIT
def test_header_line_writes_one_header_whatever_the_text(name: str, text: str) -> None:
    """Any text (control characters, lone surrogates, encoded words, any length) in
    any header we write parses back as that one header, one line once unfolded."""
    if name in ("From", "To", "Reply-To"):
        value: str | Mailbox = Mailbox(text, "reader@example.org")
    elif name == "List-Id":
        value = Mailbox(text, "nyhedsbrev.newsletter.test")
    else:
        value = text
    try:
        line = header_line(name, value)
    except UnsafeHeader:
        # Only the values we make ourselves (URLs, MIME parameters) are refused.
        assert name not in ("Subject", "From", "To", "Reply-To", "List-Id")
        return
    physical = line.split(b"\r\n")
    assert all(len(part) <= 998 for part in physical)
    assert all(part.startswith(b" ") for part in physical[1:])  # folding only
    assert line.isascii()
    message = parsed(line + b"\r\n\r\nbody\r\n")
    assert list(message.keys()) == [name]
    decoded = str(message[name])
    assert "\r" not in decoded
    assert "\n" not in decoded
    assert message.get_payload() == "body\r\n"
    if name == "Subject":
        assert decoded == readable(text)
    elif name != "List-Id" and name in ("From", "To", "Reply-To"):
        (address,) = message[name].addresses
        assert address.addr_spec == "reader@example.org"
        assert same_name(address.display_name, text)


@pytest.mark.parametrize(
    "address",
    [
        REPRO_EMAIL,
        "a=?b@example.org",
        '"a b"@example.org',
        "a@[127.0.0.1]",
        "a\r\n@x.org",
        "@x.org",
    ],
)
def test_header_line_refuses_an_address_it_cannot_write_safely(address: str) -> None:
    with pytest.raises(UnsafeHeader):
        header_line("To", Mailbox("", address), utf8=True)


# dkim.py folds the DKIM-Signature it builds from its tags (dkimpy's fold): the one
# header not written by header_line, and never made from text we are given.
ALLOWED_ELSEWHERE = {("mail/dkim.py", "fold")}


def test_only_the_header_module_writes_a_header() -> None:
    """No other module writes a header line, sets a header on a message or asks the
    email package to encode one (a grep, by the syntax tree, over the package)."""
    package = Path(__file__).resolve().parent.parent / "newsletter"
    calls = {"formataddr", "add_header", "replace_header", "header_factory", "fold", "Header"}
    calls |= {"EmailMessage", "MIMEText", "MIMEMultipart", "MIMEBase", "Address"}
    names = set(HEADER_NAMES) | {"Bcc", "Cc", "Sender", "DKIM-Signature"}
    found = []
    for path in sorted(package.rglob("*.py")):
        module = path.relative_to(package).as_posix()
        if module == "mail/headers.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            where = f"{module}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called in calls and (module, called) not in ALLOWED_ELSEWHERE:
                    found.append(f"{where} calls {called}")
            elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store):
                key = node.slice
                if isinstance(key, ast.Constant) and str(key.value).title() in names:
                    found.append(f"{where} sets [{key.value!r}]")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
                value = node.value
                text = value.decode("latin-1") if isinstance(value, bytes) else value
                if text.partition(":")[1] and text.partition(":")[0] in names:
                    found.append(f"{where} writes {text[:40]!r}")
    assert found == [], found


# --- composed mail, whatever the names and subjects -----------------------------------


@given(name=any_text, subject=any_text, list_name=any_text)
@example(name=REPRO_TEXT, subject=REPRO_TEXT, list_name=REPRO_TEXT)
@FUZZ
def test_composed_mail_has_exactly_our_headers(
    app: Flask, name: str, subject: str, list_name: str
) -> None:
    """Both builders (transactional and campaign) give our header set for any text."""
    list_id = Mailbox(list_name, "nyhedsbrev.newsletter.test")
    unsubscribe = f"<{ORIGIN}/unsubscribe/abc>"
    transactional = compose_mail(
        sender="Inklusio <news@newsletter.test>",
        to_address="reader@example.org",
        to_name=name,
        subject=subject,
        text="t",
        html="<p>h</p>",
        domain="newsletter.test",
        headers={
            "List-Unsubscribe": unsubscribe,
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "List-Id": list_id,
        },
    ).data
    envelope = make_envelope("news@newsletter.test", subject, list_id, "newsletter.test")
    campaign = build_message(
        envelope,
        to_address="reader@example.org",
        to_name=name,
        unsubscribe_url=f"{ORIGIN}/unsubscribe/abc",
        text="t",
        html="h",
    )
    for raw in (transactional, campaign):
        assert mail_problems(raw, ["reader@example.org"]) == []
        message = parsed(raw)
        assert str(message["Subject"]) == readable(subject)
        assert same_name(message["To"].addresses[0].display_name, name)


# --- signup: the address and the name ---------------------------------------------------


def test_the_reported_api_signup_is_refused(client: FlaskClient, default_list: MailingList) -> None:
    response = client.post("/api/v1/subscriptions", json={"email": REPRO_EMAIL})

    assert response.status_code == 422
    assert response.get_json()["field"] == "email"
    assert db.session.scalars(select(OutboxMessage)).all() == []


@pytest.mark.parametrize(
    "address",
    [
        REPRO_EMAIL,
        f"{q_word(REPLY_TO_PAYLOAD)}@example.org",
        "a=?b@example.org",
        "x" * 65 + "@example.org",
    ],
)
def test_normalise_email_refuses_what_no_mailbox_needs(address: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        normalise_email(address)
    assert refused.value.field == "email"


@pytest.mark.parametrize(
    "address", ["søren@example.org", "Ø.Ø@eksempel.dk", "a@bücher.de", "a+b@x.org"]
)
def test_internationalised_and_plain_addresses_still_pass(address: str) -> None:
    assert normalise_email(address)[0]


@pytest.fixture
def delivered(deliver: Deliver, smtp_server: SMTPServer) -> Deliver:
    """``deliver``, then the check that every mail received so far carries only our
    headers: run the worker, check, return the new mails."""

    def run() -> list[EmailMessage]:
        mails = deliver()
        assert_only_our_mail(smtp_server)
        return mails

    return run


@given(email=any_email, name=st.one_of(name_text, lone_surrogates))
@example(email=REPRO_EMAIL, name="")
@example(email="reader@example.org", name=REPRO_TEXT)
@FUZZ
def test_api_signup_refuses_or_sends_only_our_headers(
    client: FlaskClient, default_list: MailingList, delivered: Deliver, email: str, name: str
) -> None:
    response = client.post("/api/v1/subscriptions", json={"email": email, "name": name})

    assert response.status_code in (202, 400, 422), response.get_data(as_text=True)
    if response.status_code != 202:
        assert response.get_json()["field"] in ("email", "name")
    event(f"{response.status_code} {response.get_json().get('field', '')}")
    delivered()


@given(email=any_email, name=name_text)
@example(email=REPRO_EMAIL, name="")
@example(email="reader@example.org", name=b_word(REPLY_TO_PAYLOAD))
@FUZZ
def test_form_signup_refuses_or_sends_only_our_headers(
    client: FlaskClient, default_list: MailingList, delivered: Deliver, email: str, name: str
) -> None:
    data = {"email": email, "name": name, "website": ""}
    response = client.post("/subscribe", data=data, headers={"Origin": ORIGIN})

    assert response.status_code in (200, 400), response.get_data(as_text=True)[:300]
    if response.status_code == 400:
        page = response.get_data(as_text=True)
        assert 'id="email-error"' in page or 'id="name-error"' in page
    event(str(response.status_code))
    delivered()


def test_a_stored_unsafe_address_fails_its_mail_and_sends_nothing(
    client: FlaskClient,
    default_list: MailingList,
    deliver: Callable[[], list[EmailMessage]],
    smtp_server: SMTPServer,
) -> None:
    """An address stored before the rules refused it is never written into a header."""
    for email in ("victim@example.org", "other@example.org"):
        assert client.post("/api/v1/subscriptions", json={"email": email}).status_code == 202
    db.session.commit()
    drain_intake()
    db.session.execute(
        update(Subscriber).where(Subscriber.email == "victim@example.org").values(email=REPRO_EMAIL)
    )
    db.session.commit()

    mails = deliver()

    assert [str(m["To"]) for m in mails] == ["other@example.org"]
    failed = db.session.scalars(
        select(OutboxMessage).where(OutboxMessage.status == OutboxStatus.FAILED)
    ).all()
    assert len(failed) == 1
    assert "header" in (failed[0].last_error or "")


# --- staff texts: subject, sender, list name ---------------------------------------------


@pytest.fixture
def staff(make_staff: Callable[..., StaffUser]) -> StaffUser:
    """An editor, who receives the test mails."""
    return make_staff("editor", email="editor@example.org")


@given(
    subject=half_and_half(allowed_text, hostile_text),
    sender=half_and_half(
        header_text.map(lambda name: f"{name} <news@newsletter.test>"),
        st.one_of(st.just("Inklusio <news@newsletter.test>"), hostile_text),
    ),
)
@example(subject=REPRO_TEXT, sender="Inklusio <news@newsletter.test>")
@example(subject="Nyt", sender=f"{REPRO_TEXT} <news@newsletter.test>")
@example(subject="Nyt", sender=f"{b_word('x')}@newsletter.test")
@FUZZ
def test_campaign_subject_and_sender_are_refused_or_sent_as_one_header_each(
    app: Flask,
    default_list: MailingList,
    staff: StaffUser,
    delivered: Deliver,
    subject: str,
    sender: str,
) -> None:
    campaign, refused = attempt(lambda: create_campaign("nyhedsbrev", subject, BODY, sender))
    event(f"refused {refused.field}" if refused else "sent")
    if refused is not None:
        assert refused.field in ("subject", "sender")
        return
    assert campaign is not None
    assert queue_test_mail(campaign.id, staff)

    (mail,) = delivered()

    assert str(mail["Subject"]) == readable(f"[Test] {campaign.subject}")
    (sender_box,) = mail["From"].addresses
    assert sender_box.display_name == readable(parseaddr(campaign.sender)[0])


@given(name=half_and_half(allowed_text, hostile_text))
@example(name=REPRO_TEXT)
@FUZZ
def test_list_name_is_refused_or_sent_as_one_header(
    app: Flask,
    default_list: MailingList,
    staff: StaffUser,
    subscribed: Callable[..., EmailMessage],
    delivered: Deliver,
    name: str,
) -> None:
    if not db.session.scalar(select(Subscriber).where(Subscriber.email == "reader@example.org")):
        subscribed("reader@example.org")
    _, refused = attempt(
        lambda: update_list(default_list.id, name=name, description="", default=True, actor=staff)
    )
    event(f"refused {refused.field}" if refused else "sent")
    if refused is not None:
        assert refused.field == "name"
        return
    start_campaign(create_campaign("nyhedsbrev", "Nyt", BODY).id)

    (mail,) = delivered()

    assert str(mail["List-Id"]).endswith("<nyhedsbrev.newsletter.test>")


def test_the_reported_subject_and_list_name_are_refused_everywhere(
    app: Flask,
    default_list: MailingList,
    staff_client: Callable[..., StaffClient],
    runner: FlaskCliRunner,
    tmp_path: Path,
) -> None:
    """Console forms, services and the CLI refuse an encoded word, naming the field."""
    editor = staff_client("editor")
    data = {
        "list_slug": "nyhedsbrev",
        "subject": REPRO_TEXT,
        "sender": "news@newsletter.test",
        "body": BODY,
    }
    page = editor.post("/admin/campaigns/new", data).get_data(as_text=True)
    assert 'id="subject-error"' in page
    assert "encoded word" in page
    data = {
        "list_slug": "nyhedsbrev",
        "subject": "Nyt",
        "sender": f"{REPRO_TEXT} <news@newsletter.test>",
        "body": BODY,
    }
    page = editor.post("/admin/campaigns/new", data).get_data(as_text=True)
    assert 'id="sender-error"' in page
    assert "encoded word" in page
    data = {"slug": "andet", "name": REPRO_TEXT, "consent_text": "Ja tak."}
    page = editor.post("/admin/lists/new", data).get_data(as_text=True)
    assert 'id="name-error"' in page
    assert "encoded word" in page

    body = tmp_path / "body.md"
    body.write_text(BODY, encoding="utf-8")
    result = runner.invoke(
        args=[
            "campaign",
            "create",
            "--list",
            "nyhedsbrev",
            "--subject",
            REPRO_TEXT,
            "--body",
            str(body),
        ]
    )
    assert result.exit_code != 0
    assert "--subject" in result.output
    result = runner.invoke(args=["list", "create", "andet", "--name", REPRO_TEXT])
    assert result.exit_code != 0
    assert "name" in result.output
    assert db.session.scalars(select(Campaign)).all() == []
    assert db.session.scalar(select(MailingList).where(MailingList.slug == "andet")) is None

    with (
        app.test_request_context(headers={"Accept-Language": "da"}),
        force_locale("da"),
        pytest.raises(InvalidInput) as refused,
    ):
        create_campaign("nyhedsbrev", REPRO_TEXT, BODY)
    assert refused.value.field == "subject"
    assert refused.value.message.startswith("Emnet må ikke indeholde")


def test_stored_texts_with_encoded_words_stay_inside_their_headers(
    app: Flask,
    default_list: MailingList,
    staff: StaffUser,
    subscribed: Callable[..., EmailMessage],
    delivered: Deliver,
) -> None:
    """A subject and list name stored before the rules (written here past them) no
    longer split Subject or List-Id, nor add a Reply-To or an HTML body."""
    subscribed("reader@example.org")
    campaign = create_campaign("nyhedsbrev", "Nyt", BODY)
    subject = q_word(REPLY_TO_PAYLOAD)
    db.session.execute(update(Campaign).values(subject=subject))
    db.session.execute(update(MailingList).values(name=REPRO_TEXT))
    db.session.commit()
    assert queue_test_mail(campaign.id, staff)
    test_mail, *_ = delivered()
    start_campaign(campaign.id)
    (campaign_mail,) = delivered()

    assert str(test_mail["Subject"]) == "[Test] " + subject.replace("=?", "= ?")
    assert str(campaign_mail["Subject"]) == subject.replace("=?", "= ?")
    assert str(campaign_mail["List-Id"]) == f'"{readable(REPRO_TEXT)}" <nyhedsbrev.newsletter.test>'
    for mail in (test_mail, campaign_mail):
        assert mail["Reply-To"] is None
        assert mail["Bcc"] is None
        assert FOREIGN_IMAGE not in html_of(mail)
