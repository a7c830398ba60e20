"""Retention: personal data is kept only as long as the newsletter needs it.

The rules, each with a period in days from the settings (0 turns one off):

- RETENTION_UNCONFIRMED_DAYS: someone who never confirmed any list and has
  no active subscription is erased this long after their last ledger event.
  A lapsed request for one more list of an active subscriber is dropped.
  A signup the worker could not process (a failed intake row, waiting for
  staff) is deleted this long after it was received. Rows still waiting for
  a worker are never touched: they are processed, then the rules above apply.
- RETENTION_UNSUBSCRIBED_DAYS: someone who did confirm once but has no active
  subscription left (unsubscribed, bounced) is erased this long after their
  last ledger event (the withdrawal, usually).
- RETENTION_DELIVERY_DAYS: campaign delivery rows lose their recipient and
  error text (the campaign's counts stay), and finished transactional mail
  rows are deleted.

Erasure is :func:`privacy.erasure.erase_subscriber`, the same as "Erase me":
the ledger keeps its events with the personal fields nulled, and the address
stays on the suppression list only as a keyed digest. Every function takes
``now`` explicitly, so the rules can be tested with a controlled clock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, current_app
from sqlalchemy import ColumnElement, delete, exists, func, literal, select, update
from sqlalchemy.exc import IntegrityError

from ..database import allow_long_statements
from ..extensions import db
from ..ledger import Evidence
from ..models import (
    Channel,
    ConsentEvent,
    ConsoleSetting,
    Delivery,
    DeliveryStatus,
    OutboxMessage,
    OutboxStatus,
    SignupIntake,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    UTCDateTime,
    utcnow,
)
from .erasure import UnknownSubscriber, erase_subscriber

log = logging.getLogger(__name__)

# The console_settings row that records the day retention last ran: several
# workers share it, so the rules run once a day, not once per worker.
LAST_RUN_KEY = "privacy.retention_last_run"
_MEMO = "newsletter.retention_day"  # app.extensions: this process saw today's run


@dataclass
class PurgeReport:
    """What one retention run did (counts only: no personal data)."""

    unconfirmed_erased: int = 0
    unsubscribed_erased: int = 0
    pending_dropped: int = 0
    failed_signups_deleted: int = 0
    deliveries_anonymised: int = 0
    outbox_deleted: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counts by name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def lines(self) -> list[str]:
        """One human-readable line per rule, for `newsletter purge`."""
        return [
            f"unconfirmed signups erased: {self.unconfirmed_erased}",
            f"unsubscribed people erased: {self.unsubscribed_erased}",
            f"lapsed list requests dropped: {self.pending_dropped}",
            f"failed signups deleted from the intake: {self.failed_signups_deleted}",
            f"delivery rows anonymised: {self.deliveries_anonymised}",
            f"transactional mail rows deleted: {self.outbox_deleted}",
        ]


def _cutoff(now: datetime, setting: str) -> datetime | None:
    """``now`` minus the setting's days, or None when the rule is off (0)."""
    days = int(current_app.config[setting])
    return now - timedelta(days=days) if days > 0 else None


def _at(moment: datetime) -> ColumnElement[Any]:
    """A bound timestamp stored the way UTCDateTime columns store it."""
    return literal(moment, type_=UTCDateTime())


def purge(now: datetime) -> PurgeReport:
    """Apply every retention rule as of ``now``. Each erasure commits on its own."""
    report = PurgeReport()
    unconfirmed = _cutoff(now, "RETENTION_UNCONFIRMED_DAYS")
    unsubscribed = _cutoff(now, "RETENTION_UNSUBSCRIBED_DAYS")
    if unconfirmed is not None:
        report.unconfirmed_erased = _erase_all(_lapsed(unconfirmed, ever_confirmed=False))
        report.pending_dropped = _drop_lapsed_requests(unconfirmed)
        report.failed_signups_deleted = _drop_failed_signups(unconfirmed)
    if unsubscribed is not None:
        report.unsubscribed_erased = _erase_all(_lapsed(unsubscribed, ever_confirmed=True))
    deliveries = _cutoff(now, "RETENTION_DELIVERY_DAYS")
    if deliveries is not None:
        report.deliveries_anonymised, report.outbox_deleted = _trim_mail_logs(deliveries)
    db.session.commit()
    log.info("retention: %s", report.as_dict())
    return report


def _lapsed(cutoff: datetime, *, ever_confirmed: bool) -> list[int]:
    """Subscribers with no active list whose last ledger event is before ``cutoff``.

    ``ever_confirmed`` picks the unsubscribed (True) or the never-confirmed
    (False) kind. Without any event, the subscriber's creation time counts.
    """
    last_event = (
        select(func.max(ConsentEvent.occurred_at))
        .where(ConsentEvent.subscriber_id == Subscriber.id)
        .correlate(Subscriber)
        .scalar_subquery()
    )
    active = exists().where(
        Subscription.subscriber_id == Subscriber.id,
        Subscription.status == SubscriptionStatus.ACTIVE,
    )
    confirmed = exists().where(
        Subscription.subscriber_id == Subscriber.id, Subscription.confirmed_at.is_not(None)
    )
    query = select(Subscriber.id).where(
        ~active,
        confirmed if ever_confirmed else ~confirmed,
        func.coalesce(last_event, Subscriber.created_at) < _at(cutoff),
    )
    ids = list(db.session.scalars(query.order_by(Subscriber.id)))
    db.session.commit()  # end the read before the erasures take their locks
    return ids


def _erase_all(subscriber_ids: list[int]) -> int:
    """Erase each subscriber (one transaction each); count those erased."""
    erased = 0
    for subscriber_id in subscriber_ids:
        try:
            erase_subscriber(subscriber_id, channel=Channel.SYSTEM, actor=None, evidence=Evidence())
        except UnknownSubscriber:
            db.session.rollback()  # erased meanwhile (by the person, or another run)
            continue
        erased += 1
    return erased


def _drop_lapsed_requests(cutoff: datetime) -> int:
    """Delete never-confirmed pending subscriptions requested before ``cutoff``.

    What is left after the erasures belongs to people who stay (they have an
    active list): only the unanswered request goes. Its ``requested`` event
    stays in the ledger as the record that it was made.
    """
    result = db.session.execute(
        delete(Subscription)
        .where(
            Subscription.status == SubscriptionStatus.PENDING,
            Subscription.confirmed_at.is_(None),
            Subscription.requested_at < _at(cutoff),
        )
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return _rowcount(result)


def _drop_failed_signups(cutoff: datetime) -> int:
    """Delete failed intake rows received before ``cutoff``; waiting rows stay.

    A failed row is a signup nobody confirmed, held for staff to act on; after
    RETENTION_UNCONFIRMED_DAYS from the request it goes like any unconfirmed
    signup. A row being retried (``failed_at`` cleared) is not failed.
    """
    result = db.session.execute(
        delete(SignupIntake)
        .where(SignupIntake.failed_at.is_not(None), SignupIntake.received_at < _at(cutoff))
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return _rowcount(result)


def _trim_mail_logs(cutoff: datetime) -> tuple[int, int]:
    """Anonymise old finished deliveries; delete old finished outbox rows."""
    allow_long_statements()  # a year of campaigns may be one statement
    deliveries = db.session.execute(
        update(Delivery)
        .where(
            Delivery.subscriber_id.is_not(None),
            Delivery.status != DeliveryStatus.QUEUED,
            func.coalesce(Delivery.sent_at, Delivery.next_attempt_at) < _at(cutoff),
        )
        .values(subscriber_id=None, last_error=None)
        .execution_options(synchronize_session=False)
    )
    outbox = db.session.execute(
        delete(OutboxMessage)
        .where(
            OutboxMessage.status != OutboxStatus.QUEUED,
            func.coalesce(OutboxMessage.sent_at, OutboxMessage.next_attempt_at) < _at(cutoff),
        )
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return _rowcount(deliveries), _rowcount(outbox)


def _rowcount(result: object) -> int:
    """Rows an UPDATE or DELETE touched (0 where the driver does not say)."""
    return max(int(getattr(result, "rowcount", 0) or 0), 0)


def run_due_retention(app: Flask, now: datetime | None = None) -> PurgeReport | None:
    """Run the rules if no worker has run them today (UTC); called every worker round.

    The day is claimed first, under a row lock on one console_settings row
    (``FOR UPDATE``; SQLite serialises writers anyway), and committed before
    the rules run: another worker then sees the day taken and goes on. A run
    that fails is logged and waits for the next day (or `newsletter purge`);
    it never fails the worker's round.
    """
    now = now or utcnow()
    today = now.date().isoformat()
    if app.extensions.get(_MEMO) == today:
        return None  # this process already saw today's run: no query needed
    try:
        if not _claim_day(today, now):
            app.extensions[_MEMO] = today
            return None
        app.extensions[_MEMO] = today
        report = purge(now)
        _record_finish(report)
        return report
    except Exception:
        db.session.rollback()
        log.exception("retention: the daily run failed; it runs again tomorrow")
        return None


def _claim_day(today: str, now: datetime) -> bool:
    """Mark ``today`` as run, unless it already is. Commits."""
    row = db.session.scalar(
        select(ConsoleSetting).where(ConsoleSetting.key == LAST_RUN_KEY).with_for_update()
    )
    value = {"date": today, "started_at": now.isoformat()}
    if row is None:
        try:
            with db.session.begin_nested():
                db.session.add(ConsoleSetting(key=LAST_RUN_KEY, value=value))
        except IntegrityError:
            db.session.rollback()
            return False  # another worker created the row, and claimed the day, just now
    elif (row.value or {}).get("date") == today:
        db.session.commit()
        return False
    else:
        row.value = value
    db.session.commit()
    return True


def _record_finish(report: PurgeReport) -> None:
    """Keep the last run's counts beside its date (shown by `newsletter privacy report`)."""
    row = db.session.get(ConsoleSetting, LAST_RUN_KEY)
    if row is not None:
        row.value = {**(row.value or {}), "finished_at": utcnow().isoformat(), **report.as_dict()}
        db.session.commit()


def last_run() -> dict[str, Any] | None:
    """What the last daily run recorded, if any."""
    row = db.session.get(ConsoleSetting, LAST_RUN_KEY)
    return dict(row.value) if row is not None and isinstance(row.value, dict) else None
