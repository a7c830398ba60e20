"""Refusals at the SMTP server during a campaign: hard bounces suppress, soft ones retry.

The loopback SMTP server refuses chosen recipients at RCPT with the reply a
real server would give. A permanent (5xx) refusal fails that delivery,
suppresses the address (as a keyed digest), marks its subscriptions bounced
and records a ``suppressed`` event in the consent ledger, which still
verifies; everyone else in the batch gets the mail over the same connection.
A temporary (4xx) refusal backs off exponentially and is delivered once the
server accepts; after DELIVERY_MAX_ATTEMPTS it fails. Time is moved by
setting ``next_attempt_at``, not by sleeping.
"""

from __future__ import annotations

import json
import smtplib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import false, func, select, update

from newsletter.campaigns.service import campaign_progress, create_campaign, start_campaign
from newsletter.extensions import db
from newsletter.ledger.keys import email_digest
from newsletter.mail.transport import (
    PermanentFailure,
    ServerUnavailable,
    TemporaryFailure,
    classify,
    is_hard_bounce,
)
from newsletter.models import (
    Campaign,
    CampaignStatus,
    Channel,
    ConsentEvent,
    ConsentEventType,
    Delivery,
    DeliveryStatus,
    MailingList,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Suppression,
    utcnow,
)
from newsletter.subscriptions import suppression

from .fixtures.ledger import seal_and_verify
from .fixtures.mailflow import link_path
from .fixtures.smtp import SMTPServer

Deliver = Callable[[], list[EmailMessage]]
Subscribed = Callable[..., EmailMessage]
HARD = "550 5.1.1 no such user"
SOFT = "451 4.3.0 try later"
READERS = ["first@example.org", "gone@example.org", "third@example.org"]


@dataclass(frozen=True)
class Row:
    """A detached snapshot of one delivery (reading it leaves no transaction open)."""

    status: DeliveryStatus
    attempts: int
    last_error: str | None
    next_attempt_at: datetime
    lease_until: datetime | None
    sent_at: datetime | None


def deliveries(campaign_id: int) -> dict[str, Row]:
    """A campaign's deliveries by recipient address."""
    db.session.commit()
    result = db.session.execute(
        select(
            Subscriber.email,
            Delivery.status,
            Delivery.attempts,
            Delivery.last_error,
            Delivery.next_attempt_at,
            Delivery.lease_until,
            Delivery.sent_at,
        )
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.campaign_id == campaign_id)
    ).all()
    db.session.commit()
    return {email: Row(*rest) for email, *rest in result}


def subscription_status(email: str) -> SubscriptionStatus:
    db.session.commit()
    status = db.session.scalar(
        select(Subscription.status).join(Subscriber).where(Subscriber.email_key == email)
    )
    db.session.commit()
    assert status is not None
    return status


def campaign_status(campaign_id: int) -> CampaignStatus:
    db.session.commit()
    status = db.session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
    db.session.commit()
    assert status is not None
    return status


def make_due(campaign_id: int) -> None:
    """Move the clock past every back-off of this campaign."""
    db.session.execute(
        update(Delivery)
        .where(Delivery.campaign_id == campaign_id, Delivery.status == DeliveryStatus.QUEUED)
        .values(next_attempt_at=utcnow() - timedelta(seconds=1))
    )
    db.session.commit()


def send_campaign(subject: str = "Nyt", body: str = "Hej {{ name }}\n") -> int:
    campaign = create_campaign("nyhedsbrev", subject, body)
    start_campaign(campaign.id)
    db.session.commit()
    return campaign.id


def recipients_of(smtp_server: SMTPServer, subject: str) -> list[str]:
    """Envelope recipients of the received mails with this subject, in order."""
    return [
        address
        for received in smtp_server.recorder.received
        if received.message["Subject"] == subject
        for address in received.rcpt_tos
    ]


# --- hard bounces ------------------------------------------------------------------------


def test_a_permanent_refusal_fails_the_delivery_suppresses_the_address_and_is_ledgered(
    app: Flask,
    default_list: MailingList,
    subscribed: Subscribed,
    deliver: Deliver,
    smtp_server: SMTPServer,
    runner: FlaskCliRunner,
) -> None:
    for address in READERS:
        subscribed(address)
    smtp_server.recorder.refuse["gone@example.org"] = HARD
    campaign_id = send_campaign("Hard bounce")
    with smtp_server.recorder.lock:
        smtp_server.recorder.connections = 0

    deliver()

    assert recipients_of(smtp_server, "Hard bounce") == ["first@example.org", "third@example.org"]
    assert smtp_server.recorder.connections == 1  # the rest of the batch, same connection
    rows = deliveries(campaign_id)
    assert rows["first@example.org"].status == DeliveryStatus.SENT
    assert rows["third@example.org"].status == DeliveryStatus.SENT
    gone = rows["gone@example.org"]
    assert gone.status == DeliveryStatus.FAILED
    assert gone.last_error is not None
    assert "550" in gone.last_error
    assert "5.1.1 no such user" in gone.last_error
    assert gone.attempts == 0  # failed at once, never retried
    assert gone.lease_until is None
    assert campaign_status(campaign_id) == CampaignStatus.DONE
    progress = campaign_progress(campaign_id)
    assert (progress.sent, progress.failed, progress.queued) == (2, 1, 0)

    # Suppressed as a keyed digest: the address itself is not stored there.
    suppressions = db.session.execute(
        select(Suppression.email_digest, Suppression.reason, Suppression.created_at)
    ).all()
    assert len(suppressions) == 1
    digest, reason, _ = suppressions[0]
    assert (digest, reason) == (email_digest("gone@example.org"), "bounce")
    assert len(digest) == 64
    assert "gone" not in digest
    assert "@" not in digest

    assert subscription_status("gone@example.org") == SubscriptionStatus.BOUNCED
    assert subscription_status("first@example.org") == SubscriptionStatus.ACTIVE

    event = db.session.scalars(select(ConsentEvent).order_by(ConsentEvent.seq.desc())).first()
    assert event is not None
    assert (event.event, event.channel) == (ConsentEventType.SUPPRESSED, Channel.SYSTEM)
    assert event.email_digest == email_digest("gone@example.org")
    assert event.details["reason"] == "bounce"
    assert "550" in event.details["reply"]
    suppressed_events = db.session.scalar(
        select(func.count())
        .select_from(ConsentEvent)
        .where(ConsentEvent.event == ConsentEventType.SUPPRESSED)
    )
    assert suppressed_events == 1
    db.session.commit()
    assert seal_and_verify().ok
    result = runner.invoke(args=["ledger", "verify"])
    assert result.exit_code == 0, result.output


def test_a_later_campaign_does_not_mail_a_bounced_address(
    app: Flask,
    default_list: MailingList,
    subscribed: Subscribed,
    deliver: Deliver,
    smtp_server: SMTPServer,
) -> None:
    for address in READERS:
        subscribed(address)
    smtp_server.recorder.refuse["gone@example.org"] = HARD
    send_campaign("First")
    deliver()
    smtp_server.recorder.refuse.clear()  # even if the server would take it now

    second = create_campaign("nyhedsbrev", "Second", "Hej\n")
    assert start_campaign(second.id) == 2  # the bounced subscription is not a recipient
    deliver()

    assert sorted(recipients_of(smtp_server, "Second")) == [
        "first@example.org",
        "third@example.org",
    ]
    assert set(deliveries(second.id)) == {"first@example.org", "third@example.org"}


def test_an_address_suppressed_after_the_start_is_skipped_at_claim_time(
    app: Flask,
    make_list: Callable[..., MailingList],
    subscribed: Subscribed,
    deliver: Deliver,
    smtp_server: SMTPServer,
) -> None:
    """Two campaigns queued at once: the bounce in the first suppresses the address
    before the second reaches it, and the second skips it (and counts the skip)."""
    make_list(default=True)
    app.config["DELIVERY_BATCH_SIZE"] = 3  # one campaign a batch (order by delivery id)
    for address in READERS:
        subscribed(address)
    smtp_server.recorder.refuse["gone@example.org"] = HARD
    first = send_campaign("First")
    second = send_campaign("Second")  # queued before anything bounced
    assert len(deliveries(second)) == 3

    deliver()

    assert deliveries(first)["gone@example.org"].status == DeliveryStatus.FAILED
    assert deliveries(second)["gone@example.org"].status == DeliveryStatus.SKIPPED
    assert "gone@example.org" not in recipients_of(smtp_server, "Second")
    progress = campaign_progress(second)
    assert (progress.sent, progress.skipped, progress.failed) == (2, 1, 0)
    db.session.commit()
    assert db.session.scalar(select(func.count()).select_from(Suppression)) == 1


def test_new_signup_after_a_hard_bounce_lifts_the_suppression_once_confirmed(
    app: Flask,
    client: FlaskClient,
    default_list: MailingList,
    subscribed: Subscribed,
    subscribe: Callable[..., EmailMessage],
    deliver: Deliver,
    smtp_server: SMTPServer,
) -> None:
    """The person signs up again and confirms, which proves the mailbox works again:
    the suppression is lifted and the next campaign reaches them."""
    for address in READERS:
        subscribed(address)
    smtp_server.recorder.refuse["gone@example.org"] = HARD
    send_campaign("First")
    deliver()
    smtp_server.recorder.refuse.clear()
    app.config["CONFIRM_RESEND_WINDOW"] = 0  # as if the first confirmation were long ago

    confirmation = subscribe("gone@example.org")
    assert client.post(link_path(confirmation, "confirm")).status_code == 200
    (welcome,) = deliver()
    assert str(welcome["To"]) == "gone@example.org"
    assert subscription_status("gone@example.org") == SubscriptionStatus.ACTIVE

    later = send_campaign("Later")
    deliver()

    assert deliveries(later)["gone@example.org"].status == DeliveryStatus.SENT
    assert "gone@example.org" in recipients_of(smtp_server, "Later")
    assert len(recipients_of(smtp_server, "Later")) == 3
    db.session.commit()
    assert db.session.scalar(select(func.count()).select_from(Suppression)) == 0


# --- soft bounces ------------------------------------------------------------------------


def test_a_temporary_refusal_backs_off_and_is_delivered_once_accepted(
    app: Flask,
    default_list: MailingList,
    subscribed: Subscribed,
    deliver: Deliver,
    smtp_server: SMTPServer,
) -> None:
    base = app.config["DELIVERY_RETRY_BASE_SECONDS"]
    assert base >= 30  # the default; the checks below rely on a delay well above test time
    for address in READERS:
        subscribed(address)
    smtp_server.recorder.refuse["gone@example.org"] = SOFT
    campaign_id = send_campaign("Soft")

    before = utcnow()
    deliver()

    assert sorted(recipients_of(smtp_server, "Soft")) == [
        "first@example.org",
        "third@example.org",
    ]
    row = deliveries(campaign_id)["gone@example.org"]
    assert row.status == DeliveryStatus.QUEUED  # not failed
    assert row.attempts == 1
    assert row.last_error is not None
    assert "451" in row.last_error
    assert row.lease_until is None
    assert before + timedelta(seconds=base) <= row.next_attempt_at
    assert row.next_attempt_at <= utcnow() + timedelta(seconds=base)
    assert campaign_status(campaign_id) == CampaignStatus.SENDING
    assert subscription_status("gone@example.org") == SubscriptionStatus.ACTIVE
    db.session.commit()
    assert db.session.scalar(select(func.count()).select_from(Suppression)) == 0
    assert deliver() == []  # not due yet: nothing happens

    make_due(campaign_id)
    before = utcnow()
    deliver()  # refused again: the delay doubles
    row = deliveries(campaign_id)["gone@example.org"]
    assert (row.status, row.attempts) == (DeliveryStatus.QUEUED, 2)
    assert before + timedelta(seconds=2 * base) <= row.next_attempt_at
    assert row.next_attempt_at <= utcnow() + timedelta(seconds=2 * base)

    smtp_server.recorder.refuse.clear()
    make_due(campaign_id)
    (mail,) = deliver()

    assert str(mail["To"]) == "gone@example.org"
    row = deliveries(campaign_id)["gone@example.org"]
    assert (row.status, row.attempts) == (DeliveryStatus.SENT, 2)
    assert row.sent_at is not None
    assert campaign_status(campaign_id) == CampaignStatus.DONE
    assert sorted(recipients_of(smtp_server, "Soft")) == sorted(READERS)  # each exactly once


def test_after_the_maximum_number_of_temporary_failures_the_delivery_fails(
    app: Flask,
    default_list: MailingList,
    subscribed: Subscribed,
    deliver: Deliver,
    smtp_server: SMTPServer,
    runner: FlaskCliRunner,
) -> None:
    app.config.update(DELIVERY_MAX_ATTEMPTS=3, DELIVERY_RETRY_BASE_SECONDS=0)  # due at once
    for address in READERS:
        subscribed(address)
    smtp_server.recorder.refuse["gone@example.org"] = SOFT
    campaign_id = send_campaign("Never")

    deliver()  # the worker keeps going while something is due

    rows = deliveries(campaign_id)
    gone = rows["gone@example.org"]
    assert (gone.status, gone.attempts) == (DeliveryStatus.FAILED, 3)
    assert gone.last_error is not None
    assert "451" in gone.last_error
    assert rows["first@example.org"].status == DeliveryStatus.SENT
    assert rows["third@example.org"].status == DeliveryStatus.SENT
    assert campaign_status(campaign_id) == CampaignStatus.DONE
    # A soft bounce is no reason to suppress the address.
    assert subscription_status("gone@example.org") == SubscriptionStatus.ACTIVE
    db.session.commit()
    assert db.session.scalar(select(func.count()).select_from(Suppression)) == 0
    status = runner.invoke(args=["campaign", "status", str(campaign_id), "--json"])
    assert status.exit_code == 0, status.output
    counts = json.loads(status.output)
    assert (counts["sent"], counts["failed"], counts["queued"]) == (2, 1, 0)


# --- permanent failures that are not hard bounces ---------------------------------------


def suppressed_events() -> int:
    db.session.commit()
    count = db.session.scalar(
        select(func.count())
        .select_from(ConsentEvent)
        .where(ConsentEvent.event == ConsentEventType.SUPPRESSED)
    )
    db.session.commit()
    return count or 0


def suppression_count() -> int:
    db.session.commit()
    count = db.session.scalar(select(func.count()).select_from(Suppression))
    db.session.commit()
    return count or 0


@pytest.mark.parametrize(
    ("reply", "hard"),
    [
        (HARD, True),
        ("550 no such user here", True),  # no enhanced code: the recipient was refused
        ("553 5.1.3 bad destination mailbox address syntax", True),
        ("550 5.2.1 mailbox disabled", True),
        ("550 5.7.1 relay access denied", False),  # our relay's policy, not the address
        ("554 5.7.1 message blocked by policy", False),
        ("552 5.2.2 mailbox full", False),
    ],
)
def test_only_a_refusal_that_says_the_address_is_bad_suppresses_it(
    app: Flask,
    default_list: MailingList,
    subscribed: Subscribed,
    deliver: Deliver,
    smtp_server: SMTPServer,
    reply: str,
    hard: bool,
) -> None:
    for address in READERS:
        subscribed(address)
    smtp_server.recorder.refuse["gone@example.org"] = reply
    campaign_id = send_campaign("Refused")

    deliver()

    gone = deliveries(campaign_id)["gone@example.org"]
    assert gone.status == DeliveryStatus.FAILED  # permanent either way: no retry
    assert gone.last_error is not None
    assert reply.split(" ", 1)[1] in gone.last_error
    assert suppression_count() == (1 if hard else 0)
    assert suppressed_events() == (1 if hard else 0)
    expected = SubscriptionStatus.BOUNCED if hard else SubscriptionStatus.ACTIVE
    assert subscription_status("gone@example.org") == expected


def test_a_refused_sender_keeps_the_deliveries_queued_and_suppresses_nobody(
    app: Flask,
    default_list: MailingList,
    subscribed: Subscribed,
    deliver: Deliver,
    smtp_server: SMTPServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 5xx at MAIL FROM is our configuration, not the recipients' addresses: it used
    to suppress, bounce and ledger every recipient of the campaign. It is treated as
    the server being unavailable to us: nothing fails, nothing is suppressed, and the
    deliveries wait (capped backoff) until the sender is fixed."""
    for address in READERS:
        subscribed(address)
    campaign = create_campaign("nyhedsbrev", "S", "Hej\n", sender="Ny <ny@sender.example>")
    start_campaign(campaign.id)

    async def handle_MAIL(  # aiosmtpd's hook name
        server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        if address == "ny@sender.example":
            return "553 5.7.1 sender address rejected: not owned by user"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    monkeypatch.setattr(smtp_server.recorder, "handle_MAIL", handle_MAIL, raising=False)

    deliver()

    rows = deliveries(campaign.id)
    assert {row.status for row in rows.values()} == {DeliveryStatus.QUEUED}
    assert all("sender refused: 553" in (row.last_error or "") for row in rows.values())
    assert suppression_count() == 0
    assert suppressed_events() == 0
    for address in READERS:
        assert subscription_status(address) == SubscriptionStatus.ACTIVE


def test_a_relay_without_smtputf8_suppresses_nobody(
    app: Flask,
    default_list: MailingList,
    subscribed: Subscribed,
    deliver: Deliver,
    smtp_server: SMTPServer,
) -> None:
    """The address needs SMTPUTF8 and our relay lacks it: the address is fine."""
    subscribed("søren@example.org")
    subscribed("plain@example.org")
    smtp_server.restart(smtputf8=False)
    campaign_id = send_campaign("UTF8")

    deliver()

    rows = deliveries(campaign_id)
    assert rows["plain@example.org"].status == DeliveryStatus.SENT
    soren = rows["søren@example.org"]
    assert soren.status == DeliveryStatus.FAILED
    assert "SMTPUTF8" in (soren.last_error or "")
    assert suppression_count() == 0
    assert subscription_status("søren@example.org") == SubscriptionStatus.ACTIVE


@pytest.mark.parametrize(
    ("code", "message", "hard"),
    [
        (550, "5.1.1 no such user", True),
        (550, "no such user", True),  # no enhanced code: the refusal itself says it
        (551, "5.1.6 user has moved", True),
        (550, "5.2.1 mailbox disabled", True),
        (552, "5.2.2 mailbox full", False),
        (554, "5.7.1 relay access denied", False),
        (450, "4.2.1 try later", False),
    ],
)
def test_is_hard_bounce_reads_the_enhanced_status_code(code: int, message: str, hard: bool) -> None:
    assert is_hard_bounce(code, message) is hard


@pytest.mark.parametrize(
    ("exc", "kind", "hard"),
    [
        (
            smtplib.SMTPRecipientsRefused({"a@x.example": (550, b"5.1.1 no such user")}),
            PermanentFailure,
            True,
        ),
        (
            smtplib.SMTPRecipientsRefused({"a@x.example": (552, b"5.2.2 mailbox full")}),
            PermanentFailure,
            False,
        ),
        (smtplib.SMTPRecipientsRefused({"a@x.example": (451, b"later")}), TemporaryFailure, None),
        (
            smtplib.SMTPSenderRefused(553, b"5.1.7 bad sender", "s@x.example"),
            ServerUnavailable,
            None,
        ),
        (smtplib.SMTPDataError(554, b"5.6.0 content rejected"), PermanentFailure, False),
        (smtplib.SMTPDataError(451, b"4.3.0 try later"), TemporaryFailure, None),
        (smtplib.SMTPServerDisconnected("gone"), ServerUnavailable, None),
        (ConnectionRefusedError(111, "refused"), ServerUnavailable, None),
    ],
)
def test_classify_tells_recipient_problems_from_server_problems(
    exc: BaseException, kind: type[Exception], hard: bool | None
) -> None:
    """Only a refusal of the recipient can fail or suppress them; the server's or our
    own problems (unreachable, sender refused) leave them queued."""
    result = classify(exc)
    assert type(result) is kind
    if hard is not None:
        assert isinstance(result, PermanentFailure)
        assert result.hard_bounce is hard
    assert "b'" not in str(result)  # reply text decoded, not a bytes repr


def test_suppressing_an_address_another_worker_just_suppressed_is_no_error(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race: both workers see no suppression, both insert; the second insert hits the
    unique digest. It is rolled back to a savepoint, the session stays usable (it used
    to raise out of the batch and leave the rest of it leased)."""
    db.session.add(Suppression(email_digest=email_digest("gone@example.org"), reason="bounce"))
    db.session.commit()
    # This worker's look-up ran before the other worker committed: it saw nothing.
    monkeypatch.setattr(suppression, "select", lambda *columns: select(*columns).where(false()))

    assert suppression.add("gone@example.org", "bounce") is False

    assert db.session.scalar(select(func.count()).select_from(Suppression)) == 1
    db.session.commit()
