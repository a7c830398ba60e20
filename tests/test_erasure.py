"""Erasure (GDPR Art. 17): the address leaves every table, the ledger still verifies, the
address is suppressed until the person signs up anew and confirms."""

from __future__ import annotations

from collections.abc import Callable
from email.message import EmailMessage

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import select

from newsletter.campaigns.service import campaign_progress, create_campaign, start_campaign
from newsletter.extensions import db
from newsletter.ledger import Evidence
from newsletter.ledger.keys import email_digest
from newsletter.mail.outbox import enqueue
from newsletter.models import (
    Channel,
    ConsentEvent,
    Delivery,
    MailingList,
    OutboxKind,
    OutboxMessage,
    Subscriber,
    Suppression,
)
from newsletter.privacy.erasure import UnknownSubscriber, erase_subscriber
from newsletter.subscriptions.suppression import add as suppress

from .fixtures.ledger import seal_and_verify
from .fixtures.mailflow import link_path

ADDRESS = "ada.lovelace@example.org"
EVIDENCE = Evidence(ip="198.51.100.0/24", user_agent="Staff browser", source_url="http://x/")


def rows_containing(needle: str) -> list[str]:
    """``table.column`` of every stored value, in every table, that contains ``needle``."""
    db.session.commit()
    hits = []
    with db.engine.connect() as conn:
        for table in db.metadata.sorted_tables:
            for row in conn.execute(table.select()):
                for column, value in zip(table.columns, row, strict=True):
                    if value is not None and needle.casefold() in str(value).casefold():
                        hits.append(f"{table.name}.{column.name}")
        conn.rollback()
    return hits


def subscriber_id(address: str) -> int:
    """The id of the subscriber with this address."""
    db.session.commit()
    found = db.session.scalar(select(Subscriber.id).where(Subscriber.email_key == address))
    assert found is not None
    return found


def send_campaign(deliver: Callable[[], list[EmailMessage]], subject: str) -> list[str]:
    """Create, start and send a campaign to the default list; return the recipients."""
    campaign = create_campaign("nyhedsbrev", subject, "Hej {{ name }}!\n")
    start_campaign(campaign.id)
    recipients = [str(m["To"]) for m in deliver()]
    assert campaign_progress(campaign.id).queued == 0
    return recipients


def test_erasure_removes_the_address_everywhere_and_the_ledger_verifies(
    client: FlaskClient,
    runner: FlaskCliRunner,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
    deliver: Callable[[], list[EmailMessage]],
) -> None:
    subscribed(ADDRESS, name="Ada Lovelace")
    subscribed("other@example.org")
    assert any(ADDRESS in r for r in send_campaign(deliver, "Første nummer"))
    ada = subscriber_id(ADDRESS)
    # A refusal quoting the address, as SMTP servers do, and a mail still queued.
    delivery = db.session.scalars(select(Delivery).where(Delivery.subscriber_id == ada)).one()
    delivery.last_error = f"450 4.2.0 <{ADDRESS}>: mailbox busy"
    enqueue(OutboxKind.WELCOME, db.session.get(Subscriber, ada), list=default_list.id)
    db.session.commit()
    assert {"subscribers.email", "consent_events.email"} <= set(rows_containing(ADDRESS))

    result = erase_subscriber(ada, channel=Channel.STAFF, actor=None, evidence=EVIDENCE)

    assert rows_containing(ADDRESS) == []
    assert rows_containing("Ada Lovelace") == []
    assert rows_containing("Staff browser") == []
    # Outbox: the confirmation and welcome mails sent, and the one still queued.
    assert (result.ledger_events, result.deliveries, result.outbox_messages) == (3, 1, 3)
    report = seal_and_verify()
    assert report.ok, report.problems
    verify = runner.invoke(args=["ledger", "verify"])
    assert verify.exit_code == 0, verify.output
    digest = email_digest(ADDRESS)
    suppression = db.session.scalars(select(Suppression)).one()
    assert (suppression.email_digest, suppression.reason) == (digest, "erased")
    events = db.session.scalars(
        select(ConsentEvent).where(ConsentEvent.email_digest == digest).order_by(ConsentEvent.seq)
    ).all()
    assert [e.event for e in events] == ["requested", "confirmed", "erased"]
    for event in events:
        assert (event.email, event.ip, event.user_agent, event.source_url) == (None,) * 4
        assert event.subscriber_id is None
    kept = db.session.get(Delivery, delivery.id)
    assert kept is not None
    assert (kept.subscriber_id, kept.last_error, kept.status) == (None, None, "sent")
    # The other subscriber is untouched.
    assert "subscribers.email" in rows_containing("other@example.org")


def test_after_erasure_only_a_new_confirmed_signup_is_mailed(
    client: FlaskClient,
    default_list: MailingList,
    subscribe: Callable[..., EmailMessage],
    subscribed: Callable[..., EmailMessage],
    deliver: Callable[[], list[EmailMessage]],
) -> None:
    subscribed(ADDRESS)
    subscribed("other@example.org")
    erase_subscriber(subscriber_id(ADDRESS), channel=Channel.STAFF, actor=None, evidence=EVIDENCE)

    # A campaign started afterwards does not reach the address.
    assert send_campaign(deliver, "Efter sletningen") == ["other@example.org"]

    # Signing up anew works (a confirmation mail is not a list mail), but until
    # the person confirms, the address stays suppressed and gets no campaign.
    confirmation = subscribe(ADDRESS)
    assert db.session.scalar(select(Suppression.reason)) == "erased"
    assert send_campaign(deliver, "Mens det venter") == ["other@example.org"]

    assert client.post(link_path(confirmation, "confirm")).status_code == 200
    assert len(deliver()) == 1  # the welcome mail
    assert db.session.scalar(select(Suppression.id)) is None
    assert sorted(send_campaign(deliver, "Velkommen tilbage")) == [ADDRESS, "other@example.org"]

    # Erasing again also clears the events of the first time.
    erase_subscriber(subscriber_id(ADDRESS), channel=Channel.STAFF, actor=None, evidence=EVIDENCE)
    assert rows_containing(ADDRESS) == []
    assert seal_and_verify().ok


def test_a_queued_delivery_of_an_erased_subscriber_is_skipped(
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
    deliver: Callable[[], list[EmailMessage]],
) -> None:
    subscribed(ADDRESS)
    subscribed("other@example.org")
    campaign = create_campaign("nyhedsbrev", "I køen", "Hej!\n")
    assert start_campaign(campaign.id) == 2
    erase_subscriber(subscriber_id(ADDRESS), channel=Channel.STAFF, actor=None, evidence=EVIDENCE)

    assert [str(m["To"]) for m in deliver()] == ["other@example.org"]
    progress = campaign_progress(campaign.id)
    assert (progress.status, progress.sent, progress.skipped) == ("done", 1, 1)
    assert rows_containing(ADDRESS) == []


def test_erasure_keeps_an_existing_suppression_and_is_not_repeatable(
    app: Flask, default_list: MailingList, subscribed: Callable[..., EmailMessage]
) -> None:
    subscribed(ADDRESS)
    ada = subscriber_id(ADDRESS)
    suppress(ADDRESS, "bounce")
    db.session.commit()
    erase_subscriber(ada, channel=Channel.MANAGE_PAGE, actor=None, evidence=Evidence())
    assert list(db.session.execute(select(Suppression.reason)).scalars()) == ["bounce"]
    erased = db.session.scalars(select(ConsentEvent).where(ConsentEvent.event == "erased")).one()
    assert (erased.channel, erased.details) == ("manage_page", {})
    with pytest.raises(UnknownSubscriber):
        erase_subscriber(ada, channel=Channel.STAFF, actor=None, evidence=Evidence())
    assert (
        db.session.scalar(select(OutboxMessage.id).where(OutboxMessage.subscriber_id == ada))
        is None
    )
