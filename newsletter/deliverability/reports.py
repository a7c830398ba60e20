"""Recording a bounce, complaint or auto-reply, and acting on it, exactly once.

Every source (the SMTP refusal during a send, the bounce mailbox, a provider's
webhook) turns what it received into an ``IncomingReport`` and calls
``record_report``. The report's own id makes it idempotent: the same DSN or
webhook event twice is recorded and acted on once.

- hard bounce: the address is suppressed (keyed digest), its active
  subscriptions become bounced, and the ledger says so;
- soft bounce: counted; BOUNCE_SOFT_LIMIT of them within BOUNCE_SOFT_DAYS
  make a hard bounce;
- complaint: every subscription of the person is withdrawn at once (ledger
  events with channel ``complaint``) and the address is suppressed;
- auto-reply: recorded, nothing else;
- a report from the bounce mailbox that does not come back to one of our
  tagged VERP addresses, once BOUNCE_DOMAIN is set: recorded, nothing else.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..ledger import Evidence
from ..ledger.keys import email_digest
from ..mail.verp import parse_verp
from ..models import (
    BounceKind,
    BounceReport,
    Channel,
    Delivery,
    OutboxMessage,
    Subscriber,
    utcnow,
)
from ..subscriptions import suppression
from ..subscriptions.withdrawal import withdraw
from ..transaction import transactional
from ..validation import InvalidInput, normalise_email
from .autopause import check_campaign
from .suppress import redacted_reply, suppress_after_bounce

SOURCES = frozenset({"smtp", "imap", "postmark", "mailgun", "sendgrid", "ses"})
# How far back a report without VERP is matched to the last campaign mail sent.
ATTRIBUTION_DAYS = 30


@dataclass(frozen=True)
class IncomingReport:
    """What a source received, before anything is looked up or done."""

    kind: BounceKind
    source: str
    dedupe_key: str
    recipient: str | None = None
    verp: str | None = None
    occurred_at: datetime | None = None
    diagnostic: str = ""
    delivery_id: int | None = None  # known to the sender itself (an SMTP refusal)


@dataclass(frozen=True)
class RecordOutcome:
    """Whether the report was new, and what was done."""

    duplicate: bool
    action: str


@dataclass(frozen=True)
class _Target:
    subscriber: Subscriber | None
    email: str | None
    email_key: str | None
    campaign_id: int | None = None
    delivery_id: int | None = None
    unverified: bool = False


@transactional
def record_report(report: IncomingReport) -> RecordOutcome:
    """Record ``report`` and act on it, in one transaction; a report seen before
    (same source and id) changes nothing and says so."""
    if report.source not in SOURCES:
        raise ValueError(f"unknown report source {report.source!r}")
    digest = hashlib.sha256(f"{report.source}\0{report.dedupe_key}".encode()).hexdigest()
    if db.session.scalar(select(BounceReport.id).where(BounceReport.dedupe_digest == digest)):
        return RecordOutcome(duplicate=True, action="duplicate")
    target = _resolve(report)
    row = BounceReport(
        occurred_at=report.occurred_at,
        source=report.source,
        kind=str(report.kind),
        dedupe_digest=digest,
        email_digest=email_digest(target.email_key) if target.email_key else None,
        subscriber_id=target.subscriber.id if target.subscriber else None,
        campaign_id=target.campaign_id,
        delivery_id=target.delivery_id,
        diagnostic=redacted_reply(report.diagnostic)[:300],
        action="recorded",
    )
    try:
        with db.session.begin_nested():
            db.session.add(row)
    except IntegrityError:  # another process recorded it a moment ago
        return RecordOutcome(duplicate=True, action="duplicate")
    row.action = _act(report, target, row.email_digest)
    if target.campaign_id is not None and report.kind in (BounceKind.HARD, BounceKind.COMPLAINT):
        check_campaign(target.campaign_id)  # pauses it over the lines, in this transaction
    return RecordOutcome(duplicate=False, action=row.action)


def _resolve(report: IncomingReport) -> _Target:
    """The mail and person a report is about: by its VERP address when it has
    one of ours, else by the recipient address it names (and the last campaign
    mail sent to that person, for the campaign's figures).

    A report from the bounce mailbox is anyone's mail: once BOUNCE_DOMAIN is
    set, every mail we send returns to a tagged VERP address, so a report in
    the mailbox that does not name one is not trusted to name anyone (a forged
    "bounce" would otherwise suppress any address it names).
    """
    named = parse_verp(report.verp) if report.verp else None
    if report.delivery_id is not None:
        named = ("d", report.delivery_id)
    if named is None and report.source == "imap" and current_app.config.get("BOUNCE_DOMAIN"):
        return _Target(None, None, None, unverified=True)
    if named is not None:
        kind, row_id = named
        if kind == "d":
            delivery = db.session.get(Delivery, row_id)
            if delivery is not None:
                subscriber = (
                    db.session.get(Subscriber, delivery.subscriber_id)
                    if delivery.subscriber_id
                    else None
                )
                return _of(subscriber, report.recipient, delivery.campaign_id, delivery.id)
        else:
            outbox = db.session.get(OutboxMessage, row_id)
            if outbox is not None and outbox.subscriber_id is not None:
                return _of(db.session.get(Subscriber, outbox.subscriber_id), report.recipient)
    if not report.recipient:
        return _Target(None, None, None)
    try:
        _, email_key = normalise_email(report.recipient)
    except InvalidInput:
        return _Target(None, None, None)
    subscriber = db.session.scalar(select(Subscriber).where(Subscriber.email_key == email_key))
    if subscriber is None:
        return _of(None, report.recipient)
    delivery = _last_delivery(subscriber.id, utcnow())
    if delivery is None:
        return _of(subscriber, report.recipient)
    return _of(subscriber, report.recipient, delivery.campaign_id, delivery.id)


def _last_delivery(subscriber_id: int, before: datetime) -> Delivery | None:
    """Without VERP, the campaign mail a report is about is taken to be the last
    one sent to the person before it arrived (within ATTRIBUTION_DAYS): the
    provider's own time of the event is not trusted to order it."""
    since = before - timedelta(days=ATTRIBUTION_DAYS)
    return db.session.scalar(
        select(Delivery)
        .where(
            Delivery.subscriber_id == subscriber_id,
            Delivery.sent_at.is_not(None),
            Delivery.sent_at <= before,
            Delivery.sent_at >= since,
        )
        .order_by(Delivery.sent_at.desc())
        .limit(1)
    )


def _of(
    subscriber: Subscriber | None,
    recipient: str | None,
    campaign_id: int | None = None,
    delivery_id: int | None = None,
) -> _Target:
    """The target of a subscriber row (or, without one, of the address named)."""
    if subscriber is not None:
        return _Target(subscriber, subscriber.email, subscriber.email_key, campaign_id, delivery_id)
    email_key = None
    if recipient:
        try:
            recipient, email_key = normalise_email(recipient)
        except InvalidInput:
            recipient = None
    return _Target(None, recipient, email_key, campaign_id, delivery_id)


def _act(report: IncomingReport, target: _Target, digest: str | None) -> str:
    """Do what the kind of report calls for; returns what was done."""
    if report.kind == BounceKind.AUTO_REPLY:
        return "ignored"
    if target.unverified:
        return "unverified"
    if target.email is None or target.email_key is None:
        return "unknown_recipient"
    if report.kind == BounceKind.COMPLAINT:
        if target.subscriber is not None:
            withdraw(
                target.subscriber,
                list(target.subscriber.subscriptions),
                channel=Channel.COMPLAINT,
                evidence=Evidence(),
            )
        suppression.add(target.email_key, suppression.COMPLAINT)
        return "unsubscribed"
    if report.kind == BounceKind.SOFT:
        if _recent_soft_bounces(digest) < int(current_app.config["BOUNCE_SOFT_LIMIT"]):
            return "counted"
        suppress_after_bounce(target.email, report.diagnostic or "soft bounces over the limit")
        return "soft_limit"
    suppress_after_bounce(target.email, report.diagnostic)
    return "suppressed"


def _recent_soft_bounces(digest: str | None) -> int:
    """Soft bounces of the address within BOUNCE_SOFT_DAYS, this one included."""
    since = utcnow() - timedelta(days=float(current_app.config["BOUNCE_SOFT_DAYS"]))
    db.session.flush()
    return int(
        db.session.scalar(
            select(func.count()).where(
                BounceReport.email_digest == digest,
                BounceReport.kind == BounceKind.SOFT,
                BounceReport.received_at >= since,
            )
        )
        or 0
    )
