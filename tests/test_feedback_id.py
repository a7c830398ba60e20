"""Bounce attribution and sender identity on the wire.

- Campaign (bulk) mail carries Google's ``Feedback-ID: a:b:c:SenderId``
  (campaign id : list slug : "campaign" : sender id), the same for every
  recipient of a campaign, holding nothing about the recipient; the sender id
  is FEEDBACK_ID_SENDER, else the organisation's name or the mail domain (5 to
  15 characters, as Google wants). Transactional mail has none.
- Transactional mail (confirmation, welcome, data copy) is From
  MAIL_TRANSACTIONAL_SENDER when set, else MAIL_DEFAULT_SENDER; campaign mail
  stays From the campaign's sender.
- With BOUNCE_DOMAIN set, each campaign delivery goes out with its own
  envelope sender (MAIL FROM) ``bounces+<opaque>@BOUNCE_DOMAIN`` that names
  the delivery row (mail/verp.py); without it, the From address as before.
  No Return-Path is written: the receiving server adds it from the envelope.

Everything goes through the real worker to the loopback SMTP server, which
records the envelope.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from email.message import EmailMessage

import dkim
import pytest
from flask import Flask
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from newsletter.campaigns.service import create_campaign, queue_test_mail, start_campaign
from newsletter.extensions import db
from newsletter.mail.message import compose_mail
from newsletter.mail.outbox import enqueue
from newsletter.mail.render import feedback_field, feedback_id, feedback_sender, returning_to
from newsletter.mail.transport import SMTPTransport
from newsletter.mail.verp import envelope_sender, parse_verp
from newsletter.models import MailingList, OutboxKind, Role, StaffUser, Subscriber
from newsletter.models.campaigns import Delivery

from .fixtures.mailflow import Deliver
from .fixtures.properties import PROPERTIES
from .fixtures.smtp import Received, SMTPServer
from .test_dkim import DOMAIN, SELECTOR, dns_for, generate_ed25519_key

Subscribed = Callable[..., EmailMessage]
BODY = "Hej {{ name }}!\n\nLæs [mere](https://inklusio.dk/nyt).\n"
FIELD = re.compile(r"[A-Za-z0-9._-]{1,40}")


def readers(subscribed: Subscribed, *names: str) -> None:
    for name in names:
        subscribed(f"{name}@example.org", name=name.capitalize())


def campaign_mails(smtp_server: SMTPServer, before: int) -> list[Received]:
    return smtp_server.recorder.received[before:]


def send_campaign(subject: str = "Nyt") -> int:
    campaign = create_campaign("nyhedsbrev", subject, BODY)
    start_campaign(campaign.id)
    return campaign.id


# --- Feedback-ID -------------------------------------------------------------------


def test_campaign_mail_carries_a_feedback_id_without_personal_data(
    app: Flask,
    default_list: MailingList,
    subscribed: Subscribed,
    deliver: Deliver,
    smtp_server: SMTPServer,
) -> None:
    readers(subscribed, "anna", "bo")
    before = len(smtp_server.recorder.received)
    campaign_id = send_campaign()
    deliver()

    mails = campaign_mails(smtp_server, before)
    assert len(mails) == 2
    values = {str(m.message["Feedback-ID"]) for m in mails}
    assert values == {f"{campaign_id}:nyhedsbrev:campaign:Inklusio-ApS"}  # the same for all
    for mail in mails:
        assert len(mail.message.get_all("Feedback-ID") or []) == 1
        raw_header = mail.raw.partition(b"\r\n\r\n")[0]
        line = next(x for x in raw_header.split(b"\r\n") if x.startswith(b"Feedback-ID: "))
        value = line.decode("ascii").removeprefix("Feedback-ID: ")
        *fields, sender = value.split(":")
        assert len(fields) == 3
        assert 5 <= len(sender) <= 15
        for person in ("anna", "bo", "Anna", "Bo", "example.org"):
            assert person not in value


def test_feedback_id_sender_is_the_setting(
    app: Flask,
    default_list: MailingList,
    subscribed: Subscribed,
    deliver: Deliver,
    smtp_server: SMTPServer,
) -> None:
    app.config["FEEDBACK_ID_SENDER"] = "inklusio nyhed: æ"  # made a field, cut to 15
    readers(subscribed, "anna")
    before = len(smtp_server.recorder.received)
    campaign_id = send_campaign()
    deliver()

    (mail,) = campaign_mails(smtp_server, before)
    assert mail.message["Feedback-ID"] == f"{campaign_id}:nyhedsbrev:campaign:inklusio-nyhed"


def test_transactional_mail_has_no_feedback_id(
    app: Flask,
    default_list: MailingList,
    subscribed: Subscribed,
    deliver: Deliver,
    smtp_server: SMTPServer,
    make_staff: Callable[..., StaffUser],
) -> None:
    readers(subscribed, "anna")  # confirmation and welcome
    enqueue(OutboxKind.DATA_EXPORT, db.session.scalars(select(Subscriber)).one())
    campaign = create_campaign("nyhedsbrev", "Nyt", BODY)
    queue_test_mail(campaign.id, make_staff(Role.EDITOR))
    db.session.commit()
    deliver()

    received = smtp_server.recorder.received
    assert len(received) == 4
    assert [r.message["Feedback-ID"] for r in received] == [None] * 4


@pytest.mark.parametrize(
    ("organization", "domain_url", "expected"),
    [
        ("Inklusio ApS", "https://newsletter.test", "Inklusio-ApS"),
        ("Foreningen for Æbler og Pærer", "https://nyt.inklusio.dk", "nyt.inklusio.dk"),
        ("IO", "https://news.example", "news.example"),  # too short: the domain
        ("", "https://a-very-long-host.example.org", "a-very-long-hos"),  # cut to 15
    ],
)
def test_the_default_sender_id(
    app: Flask, organization: str, domain_url: str, expected: str
) -> None:
    app.config.update(ORGANIZATION_NAME=organization, BASE_URL=domain_url)
    with app.app_context():
        assert feedback_sender() == expected
        assert feedback_id(7, "kurser") == f"7:kurser:campaign:{expected}"


@given(value=st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
@example(value="a:b:c:d")
@example(value="x\r\nBcc: evil@example.org")
@example(value="=?utf-8?b?DQo=?=")
@settings(PROPERTIES, max_examples=300)
def test_a_feedback_field_is_one_safe_field(value: str) -> None:
    """Whatever the text, a field is 1 to 40 characters of [A-Za-z0-9._-]: no ":"
    to make another field, nothing a header cannot carry."""
    assert FIELD.fullmatch(feedback_field(value))


# --- the transactional sender --------------------------------------------------------


def test_transactional_mail_is_from_the_transactional_sender(
    app: Flask,
    default_list: MailingList,
    subscribed: Subscribed,
    deliver: Deliver,
    smtp_server: SMTPServer,
) -> None:
    app.config["MAIL_TRANSACTIONAL_SENDER"] = "Inklusio service <service@newsletter.test>"
    readers(subscribed, "anna")
    enqueue(OutboxKind.DATA_EXPORT, db.session.scalars(select(Subscriber)).one())
    db.session.commit()
    deliver()
    send_campaign()
    deliver()

    received = smtp_server.recorder.received
    assert len(received) == 4  # confirmation, welcome, data copy, campaign
    *transactional, bulk = received
    for mail in transactional:
        (address,) = mail.message["From"].addresses
        assert (address.display_name, address.addr_spec) == (
            "Inklusio service",
            "service@newsletter.test",
        )
        assert mail.mail_from == "service@newsletter.test"
    assert bulk.message["Feedback-ID"] is not None
    assert bulk.message["From"].addresses[0].addr_spec == "nyhedsbrev@newsletter.test"


def test_without_the_setting_transactional_mail_is_from_the_default_sender(
    default_list: MailingList, subscribed: Subscribed, smtp_server: SMTPServer
) -> None:
    readers(subscribed, "anna")
    for mail in smtp_server.recorder.received:
        assert mail.message["From"].addresses[0].addr_spec == "nyhedsbrev@newsletter.test"
        assert mail.mail_from == "nyhedsbrev@newsletter.test"


# --- the envelope sender (VERP) ---------------------------------------------------------


def test_each_delivery_has_its_own_envelope_sender(
    app: Flask,
    default_list: MailingList,
    subscribed: Subscribed,
    deliver: Deliver,
    smtp_server: SMTPServer,
) -> None:
    readers(subscribed, "anna", "bertil", "carl")
    app.config["BOUNCE_DOMAIN"] = "bounce.newsletter.test"
    before = len(smtp_server.recorder.received)
    campaign_id = send_campaign()
    deliver()

    mails = campaign_mails(smtp_server, before)
    assert len(mails) == 3
    db.session.commit()
    rows = {
        row.email: row.id
        for row in db.session.execute(
            select(Subscriber.email, Delivery.id)
            .join(Delivery, Delivery.subscriber_id == Subscriber.id)
            .where(Delivery.campaign_id == campaign_id)
        )
    }
    db.session.commit()
    senders = set()
    for mail in mails:
        (recipient,) = mail.rcpt_tos
        with app.app_context():
            assert parse_verp(mail.mail_from) == ("d", rows[recipient])
            assert mail.mail_from == envelope_sender("d", rows[recipient])
        assert mail.mail_from.startswith("bounces+")
        assert mail.mail_from.endswith("@bounce.newsletter.test")
        opaque = mail.mail_from.partition("@")[0].removeprefix("bounces+")
        assert recipient.partition("@")[0] not in opaque  # no address inside
        senders.add(mail.mail_from)
        # The From header is the campaign's; Return-Path is the receiver's to write.
        assert mail.message["From"].addresses[0].addr_spec == "nyhedsbrev@newsletter.test"
        assert mail.message["Return-Path"] is None
    assert len(senders) == 3


def test_without_a_bounce_domain_the_envelope_sender_is_the_from_address(
    default_list: MailingList, subscribed: Subscribed, deliver: Deliver, smtp_server: SMTPServer
) -> None:
    readers(subscribed, "anna")
    before = len(smtp_server.recorder.received)
    send_campaign()
    deliver()

    (mail,) = campaign_mails(smtp_server, before)
    assert mail.mail_from == "nyhedsbrev@newsletter.test"


def test_dkim_verifies_on_a_verp_campaign_mail_with_feedback_id(
    app: Flask,
    default_list: MailingList,
    subscribed: Subscribed,
    deliver: Deliver,
    smtp_server: SMTPServer,
) -> None:
    key = generate_ed25519_key()
    app.config.update(
        DKIM_SELECTOR=SELECTOR,
        DKIM_DOMAIN=DOMAIN,
        DKIM_ALGORITHM=key.algorithm,
        DKIM_PRIVATE_KEY=key.private,
        BOUNCE_DOMAIN="bounce.newsletter.test",
    )
    readers(subscribed, "anna")
    before = len(smtp_server.recorder.received)
    send_campaign()
    deliver()

    (mail,) = campaign_mails(smtp_server, before)
    assert mail.message["Feedback-ID"] is not None
    assert dkim.verify(mail.raw, dnsfunc=dns_for(key))


def test_an_outbox_mail_returns_to_its_own_envelope_sender(
    app: Flask, smtp_server: SMTPServer
) -> None:
    """``returning_to`` gives an outbox mail the envelope sender of its row, which
    the SMTP transport sends as MAIL FROM; without BOUNCE_DOMAIN the mail is
    unchanged."""
    with app.app_context():
        mail = compose_mail(
            sender="Inklusio <nyhedsbrev@newsletter.test>",
            to_address="reader@example.org",
            to_name="Reader",
            subject="Hej",
            text="t",
            html="<p>h</p>",
            domain="newsletter.test",
        )
        assert returning_to(mail, "o", 42) is mail
        app.config["BOUNCE_DOMAIN"] = "bounce.newsletter.test"
        returned = returning_to(mail, "o", 42)
        assert parse_verp(returned.sender) == ("o", 42)
        assert (returned.recipient, returned.data) == (mail.recipient, mail.data)
        with SMTPTransport(app) as transport:
            transport.send(returned)
        (received,) = smtp_server.recorder.received
        assert received.mail_from == returned.sender
        assert parse_verp(received.mail_from) == ("o", 42)


def test_a_utf8_from_still_needs_smtputf8_under_an_ascii_envelope_sender(app: Flask) -> None:
    """The envelope sender is ASCII, but a From address that is not stays UTF-8 in
    the header: the mail must still go with SMTPUTF8, never as 8-bit without it."""
    with app.app_context():
        app.config["BOUNCE_DOMAIN"] = "bounce.newsletter.test"
        mail = compose_mail(
            sender="Søren <søren@blåbær.dk>",
            to_address="reader@example.org",
            to_name="Reader",
            subject="Hej",
            text="t",
            html="<p>h</p>",
            domain="newsletter.test",
        )
        returned = returning_to(mail, "o", 7)
        assert returned.sender.isascii()
        assert returned.needs_smtputf8
        ascii_mail = returning_to(
            compose_mail(
                sender="nyhedsbrev@newsletter.test",
                to_address="reader@example.org",
                to_name="Søren",
                subject="Hej æøå",
                text="æøå",
                html="<p>æøå</p>",
                domain="newsletter.test",
            ),
            "o",
            8,
        )
        assert not ascii_mail.needs_smtputf8


def test_every_transactional_mail_returns_to_its_outbox_row(
    app: Flask, default_list: MailingList, subscribed: Subscribed, smtp_server: SMTPServer
) -> None:
    """Through the real worker: the confirmation and the welcome mail each go out
    with the envelope sender that names their own outbox row."""
    from newsletter.models import OutboxMessage

    app.config["BOUNCE_DOMAIN"] = "bounce.newsletter.test"
    readers(subscribed, "anna")
    received = smtp_server.recorder.received
    assert len(received) == 2  # confirmation, welcome
    named = [parse_verp(mail.mail_from) for mail in received]
    rows = db.session.scalars(select(OutboxMessage.id).order_by(OutboxMessage.id)).all()
    assert named == [("o", row_id) for row_id in rows]
    assert all(mail.message["From"].addresses[0].domain == "newsletter.test" for mail in received)
