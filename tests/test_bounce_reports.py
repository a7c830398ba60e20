"""The deliverability core: one report, from any source, recorded and acted on once."""

from __future__ import annotations

from collections.abc import Callable
from email.message import EmailMessage

import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from newsletter.deliverability.reports import IncomingReport, record_report
from newsletter.extensions import db
from newsletter.ledger.keys import email_digest
from newsletter.mail.verp import envelope_sender, parse_verp
from newsletter.models import (
    BounceKind,
    BounceReport,
    ConsentEvent,
    MailingList,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Suppression,
)

from .fixtures.ledger import seal_and_verify

ADDRESS = "reader@example.org"


def report(kind: BounceKind, key: str, **fields: object) -> IncomingReport:
    return IncomingReport(kind=kind, source="imap", dedupe_key=key, **fields)  # type: ignore[arg-type]


def statuses() -> set[str]:
    return {str(s) for s in db.session.scalars(select(Subscription.status))}


def suppressed(reason: str) -> bool:
    digest = email_digest(ADDRESS)
    row = db.session.scalar(select(Suppression).where(Suppression.email_digest == digest))
    return row is not None and row.reason == reason


def events() -> list[tuple[str, str]]:
    rows = db.session.execute(
        select(ConsentEvent.event, ConsentEvent.channel).order_by(ConsentEvent.seq)
    ).all()
    return [(row.event, row.channel) for row in rows]


@pytest.fixture
def reader(default_list: MailingList, subscribed: Callable[..., EmailMessage]) -> Subscriber:
    subscribed(ADDRESS)
    subscriber = db.session.scalar(select(Subscriber).where(Subscriber.email_key == ADDRESS))
    assert subscriber is not None
    return subscriber


def test_verp_names_a_row_and_only_with_its_tag(app: Flask) -> None:
    assert envelope_sender("d", 12345) is None  # no BOUNCE_DOMAIN: no VERP
    app.config["BOUNCE_DOMAIN"] = "bounce.example.org"
    address = envelope_sender("d", 12345)
    assert address is not None
    assert address.startswith("bounces+d")
    assert address.endswith("@bounce.example.org")
    assert "example.org" not in address.partition("@")[0]
    assert parse_verp(address) == ("d", 12345)
    assert parse_verp(address.upper()) == ("d", 12345)  # mail systems may change case
    assert parse_verp(f"<{envelope_sender('o', 7)}>") == ("o", 7)
    local, _, domain = address.partition("@")
    assert parse_verp(f"{local[:-1]}0@{domain}") is None or local.endswith("0")
    assert parse_verp(local.replace("d", "o", 1) + "@" + domain) is None  # the tag binds the kind
    assert parse_verp(f"{local}@other.example.org") is None
    assert parse_verp("someone@bounce.example.org") is None


@settings(max_examples=200)
@given(st.text(max_size=300))
def test_parse_verp_never_raises(text: str) -> None:
    from newsletter import create_app

    app = create_app({"TESTING": True, "SECRET_KEY": "k" * 40, "BOUNCE_DOMAIN": "b.example"})
    with app.app_context():
        assert parse_verp(text) is None or parse_verp(text)[0] in {"d", "o"}


def test_a_hard_bounce_suppresses_once(app: Flask, reader: Subscriber) -> None:
    first = record_report(
        report(
            BounceKind.HARD, "dsn-1", recipient=ADDRESS, diagnostic=f"550 5.1.1 <{ADDRESS}> unknown"
        )
    )
    assert (first.duplicate, first.action) == (False, "suppressed")
    assert statuses() == {"bounced"}
    assert suppressed("bounce")
    again = record_report(report(BounceKind.HARD, "dsn-1", recipient=ADDRESS))
    assert again.duplicate
    assert db.session.scalar(select(func.count()).select_from(BounceReport)) == 1
    assert events()[-1] == ("suppressed", "system")
    stored = db.session.scalar(select(BounceReport))
    assert stored is not None
    assert ADDRESS not in stored.diagnostic
    assert stored.email_digest == email_digest(ADDRESS)
    assert seal_and_verify().ok


def test_soft_bounces_become_hard_at_the_limit(app: Flask, reader: Subscriber) -> None:
    app.config.update(BOUNCE_SOFT_LIMIT=3, BOUNCE_SOFT_DAYS=7)
    actions = [
        record_report(report(BounceKind.SOFT, f"soft-{n}", recipient=ADDRESS)).action
        for n in range(3)
    ]
    assert actions == ["counted", "counted", "soft_limit"]
    assert suppressed("bounce")
    assert statuses() == {"bounced"}


def test_a_complaint_unsubscribes_at_once_and_suppresses(app: Flask, reader: Subscriber) -> None:
    outcome = record_report(
        IncomingReport(
            kind=BounceKind.COMPLAINT,
            source="mailgun",
            dedupe_key="ev-1",
            recipient=ADDRESS.upper(),
        )
    )
    assert outcome.action == "unsubscribed"
    assert statuses() == {str(SubscriptionStatus.UNSUBSCRIBED)}
    assert suppressed("complaint")
    assert events()[-1] == ("withdrawn", "complaint")
    assert record_report(
        IncomingReport(
            kind=BounceKind.COMPLAINT, source="mailgun", dedupe_key="ev-1", recipient=ADDRESS
        )
    ).duplicate
    assert [e for e in events() if e[1] == "complaint"] == [("withdrawn", "complaint")]
    assert seal_and_verify().ok


def test_auto_replies_and_unknown_recipients_change_nothing(app: Flask, reader: Subscriber) -> None:
    assert (
        record_report(report(BounceKind.AUTO_REPLY, "ooo", recipient=ADDRESS)).action == "ignored"
    )
    assert (
        record_report(report(BounceKind.HARD, "x", recipient="nobody@example.net")).action
        == "suppressed"
    )
    assert (
        record_report(report(BounceKind.HARD, "y", recipient="not an address")).action
        == "unknown_recipient"
    )
    assert record_report(report(BounceKind.HARD, "z")).action == "unknown_recipient"
    assert statuses() == {"active"}


def test_the_same_id_from_another_source_is_another_report(app: Flask, reader: Subscriber) -> None:
    record_report(report(BounceKind.SOFT, "42", recipient=ADDRESS))
    assert not record_report(
        IncomingReport(kind=BounceKind.SOFT, source="postmark", dedupe_key="42", recipient=ADDRESS)
    ).duplicate


def test_unknown_sources_are_refused(app: Flask) -> None:
    with pytest.raises(ValueError, match="unknown report source"):
        record_report(IncomingReport(kind=BounceKind.HARD, source="fax", dedupe_key="1"))


def test_with_verp_a_mailbox_report_must_come_back_to_a_tagged_address(
    app: Flask, reader: Subscriber
) -> None:
    """Anyone can mail the bounce mailbox: once BOUNCE_DOMAIN is set, a "bounce"
    that does not return to one of our tagged VERP addresses acts on no one."""
    app.config["BOUNCE_DOMAIN"] = "bounce.example.org"
    forged = record_report(report(BounceKind.HARD, "forged", recipient=ADDRESS))
    assert forged.action == "unverified"
    wrong_tag = record_report(
        report(
            BounceKind.HARD,
            "wrong",
            recipient=ADDRESS,
            verp="bounces+d1-0000000000@bounce.example.org",
        )
    )
    assert wrong_tag.action == "unverified"
    assert statuses() == {"active"}
    assert not suppressed("bounce")
    signed = IncomingReport(
        kind=BounceKind.HARD, source="mailgun", dedupe_key="w", recipient=ADDRESS
    )
    assert record_report(signed).action == "suppressed"  # an authenticated webhook is trusted
