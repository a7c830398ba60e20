"""Bounces that a real Postfix writes itself, read back through the bounce mailbox.

The app's worker sends a campaign to a Postfix instance on loopback (the
company relay). Postfix accepts every recipient and passes the mail on; the
remote server (the project's recording SMTP server) refuses one recipient
with 550 5.1.1 and another with 452 4.2.2. Postfix then returns a bounce
(Action: failed) and a delay warning (Action: delayed) to each mail's VERP
envelope sender. Those very messages go into a real Dovecot mailbox, and
``newsletter bounces fetch`` must suppress the first address, count the
second as a soft bounce, and attribute both to their campaign deliveries.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage, Message

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import select

from newsletter.campaigns.service import create_campaign, start_campaign
from newsletter.extensions import db
from newsletter.ledger.keys import email_digest
from newsletter.mail.verp import envelope_sender
from newsletter.models import (
    BounceReport,
    ConsentEvent,
    ConsentEventType,
    Delivery,
    MailingList,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Suppression,
)
from newsletter.worker.round import run_worker

from .fixtures.dovecot import DovecotMailbox, dovecot, dovecot_server  # noqa: F401
from .fixtures.postfix import MYHOSTNAME, PostfixServer, Received, postfix, world  # noqa: F401

BOUNCE_DOMAIN = "bounce.newsletter.test"
GONE = "gone@mx.example.net"  # the remote server: 550 5.1.1, no such user
FULL = "full@mx.example.net"  # the remote server: 452 4.2.2, mailbox full
READS = "reads@mx.example.net"  # delivered


@pytest.fixture
def app(app_factory: Callable[..., Flask], dovecot: DovecotMailbox) -> Iterator[Flask]:  # noqa: F811
    """VERP on, and the bounce mailbox on Dovecot; signups go through the test
    SMTP server, as elsewhere."""
    application = app_factory(BOUNCE_DOMAIN=BOUNCE_DOMAIN, BOUNCE_IMAP_URL=dovecot.url())
    with application.app_context():
        yield application


def subscriber_id(address: str) -> int:
    found = db.session.scalar(select(Subscriber.id).where(Subscriber.email_key == address))
    assert found is not None
    return found


def verp_of(campaign_id: int, address: str) -> tuple[int, str]:
    """The delivery of the campaign to ``address`` and its VERP envelope sender."""
    delivery = db.session.scalar(
        select(Delivery.id).where(
            Delivery.campaign_id == campaign_id,
            Delivery.subscriber_id == subscriber_id(address),
        )
    )
    assert delivery is not None
    verp = envelope_sender("d", delivery)
    assert verp is not None
    return delivery, verp


def returned_to(verp: str, action: str) -> Callable[[Received], bool]:
    """A report from Postfix (null sender) to ``verp`` of the given DSN action."""
    return lambda r: (
        r.mail_from == "<>" and r.rcpt_tos == [verp] and f"\nAction: {action}".encode() in r.raw
    )


def delivery_status(raw: bytes) -> dict[str, str]:
    """The per-recipient fields of a DSN's message/delivery-status part."""
    message = message_from_bytes(raw, policy=policy.default)
    for part in message.walk():
        if part.get_content_type() == "message/delivery-status":
            blocks = part.get_payload()
            assert isinstance(blocks, list)
            recipient = blocks[1]  # blocks[0] holds the per-message fields
            assert isinstance(recipient, Message)
            return {name: str(value).split("\n")[0].strip() for name, value in recipient.items()}
    raise AssertionError("no message/delivery-status part")


def test_postfix_bounces_travel_through_the_mailbox_to_suppression(
    app: Flask,
    app_factory: Callable[..., Flask],
    runner: FlaskCliRunner,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
    dovecot: DovecotMailbox,  # noqa: F811
    postfix: PostfixServer,  # noqa: F811
) -> None:
    for address in (GONE, FULL, READS):
        subscribed(address)
    postfix.world.recorder.refuse.update(
        {
            GONE: f"550 5.1.1 <{GONE}>: Recipient address rejected: User unknown",
            FULL: f"452 4.2.2 <{FULL}>: Mailbox full",
        }
    )
    campaign = create_campaign(default_list.slug, "December news", "Hello {{ name }}\n")
    start_campaign(campaign.id)
    db.session.commit()
    gone_delivery, gone_verp = verp_of(campaign.id, GONE)
    full_delivery, full_verp = verp_of(campaign.id, FULL)
    _, reads_verp = verp_of(campaign.id, READS)
    assert len({gone_verp, full_verp, reads_verp}) == 3
    db.session.commit()

    # The worker of a deployment whose MAIL_SERVER is the Postfix relay.
    relayed = app_factory(
        BOUNCE_DOMAIN=BOUNCE_DOMAIN, MAIL_SERVER="127.0.0.1", MAIL_PORT=postfix.port
    )
    assert run_worker(relayed, threading.Event(), once=True) == 0
    db.session.commit()
    # Postfix took all three: the worker saw no refusal.
    statuses = db.session.scalars(
        select(Delivery.status).where(Delivery.campaign_id == campaign.id)
    ).all()
    assert {str(s) for s in statuses} == {"sent"}

    delivered = postfix.wait_for(lambda r: r.rcpt_tos == [READS])
    assert delivered.mail_from == reads_verp
    bounce = postfix.wait_for(returned_to(gone_verp, "failed"))
    warning = postfix.wait_for(returned_to(full_verp, "delayed"))

    # What Postfix wrote: to our VERP address, about the right recipient.
    assert str(bounce.message["To"]) == gone_verp
    assert str(bounce.message["From"]).endswith(f"<MAILER-DAEMON@{MYHOSTNAME}>")
    hard = delivery_status(bounce.raw)
    assert hard["Final-Recipient"] == f"rfc822; {GONE}"
    assert (hard["Action"], hard["Status"]) == ("failed", "5.1.1")
    assert hard["Diagnostic-Code"].startswith("smtp; 550 5.1.1")
    soft = delivery_status(warning.raw)
    assert soft["Final-Recipient"] == f"rfc822; {FULL}"
    assert (soft["Action"], soft["Status"]) == ("delayed", "4.2.2")

    # Into the bounce mailbox, and read by the command.
    dovecot.append(bounce.raw)
    dovecot.append(warning.raw)
    result = runner.invoke(args=["bounces", "fetch", "--json"])
    assert result.exit_code == 0, result.output
    counts = json.loads(result.output)
    assert (counts["messages"], counts["recorded"], counts["moved"]) == (2, 2, 2)
    assert counts["unreadable"] == 0
    db.session.commit()

    rows = {row.delivery_id: row for row in db.session.scalars(select(BounceReport)).all()}
    assert set(rows) == {gone_delivery, full_delivery}
    gone_row, full_row = rows[gone_delivery], rows[full_delivery]
    assert (gone_row.kind, gone_row.source, gone_row.action) == ("hard", "imap", "suppressed")
    assert gone_row.campaign_id == campaign.id
    assert gone_row.subscriber_id == subscriber_id(GONE)
    assert GONE not in gone_row.diagnostic
    assert (full_row.kind, full_row.action) == ("soft", "counted")
    assert full_row.campaign_id == campaign.id

    # The hard bounce: suppressed, subscription bounced, and the ledger says so.
    suppressed = db.session.scalars(select(Suppression.email_digest)).all()
    assert suppressed == [email_digest(GONE)]
    assert status_of(GONE) == {str(SubscriptionStatus.BOUNCED)}
    assert status_of(FULL) == {str(SubscriptionStatus.ACTIVE)}
    events = db.session.scalars(
        select(ConsentEvent.event).where(ConsentEvent.email_digest == email_digest(GONE))
    ).all()
    assert ConsentEventType.SUPPRESSED in events

    # The campaign's figures count them.
    report = runner.invoke(args=["report", "deliverability", "--json"])
    (mine,) = [c for c in json.loads(report.output)["campaigns"] if c["id"] == campaign.id]
    assert (mine["sends"], mine["hard_bounces"], mine["soft_bounces"]) == (3, 1, 1)


def status_of(address: str) -> set[str]:
    db.session.commit()
    return {
        str(s)
        for s in db.session.scalars(
            select(Subscription.status).where(Subscription.subscriber_id == subscriber_id(address))
        )
    }
