"""Steps shared by the lifecycle service: pending lists, confirmation mail, events."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from flask import current_app
from sqlalchemy import Row, Select, select

from ..extensions import db
from ..ledger import Evidence
from ..ledger.append import PolicyInForce, append_pending, policy_in_force_query
from ..ledger.pending import PendingEvent, Recorded
from ..mail.outbox import enqueue
from ..models import (
    Channel,
    ConsentEventType,
    ConsentText,
    MailingList,
    OutboxKind,
    OutboxMessage,
    OutboxStatus,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    utcnow,
)

ACTIVE_OR_PENDING = (SubscriptionStatus.ACTIVE, SubscriptionStatus.PENDING)
_CHUNK = 1000  # subscriber ids per IN list


@dataclass(frozen=True)
class Terms:
    """What a signup agrees to: each list's consent text in force, today's policy."""

    texts: dict[int, int]  # list id -> consent text id, in the order asked for
    policy: PolicyInForce


def request_lists(
    subscriber: Subscriber,
    terms: Terms,
    channel: Channel,
    evidence: Evidence,
    recorded: Recorded | None = None,
) -> list[PendingEvent]:
    """Make each list pending unless already active; return the events to log.

    The caller appends them (``append_all``, with ``terms.policy``) once its
    other writes are done. ``recorded`` is the time and policy of a request
    made earlier (a signup from the intake): the request time is then when
    the lists were requested, and a list left after that time stays left (the
    later withdrawal wins over the earlier request).
    """
    existing = {s.list_id: s for s in subscriber.subscriptions}
    now = recorded.at if recorded is not None else utcnow()
    events = []
    for list_id, text_id in terms.texts.items():
        subscription = existing.get(list_id)
        if subscription is not None and subscription.status == SubscriptionStatus.ACTIVE:
            continue
        left = subscription.unsubscribed_at if subscription is not None else None
        if recorded is not None and left is not None and left > recorded.at:
            continue
        if subscription is None:
            subscription = Subscription(list_id=list_id)
            subscriber.subscriptions.append(subscription)
        subscription.status = SubscriptionStatus.PENDING
        subscription.consent_text_id = text_id
        subscription.requested_at = now
        subscription.unsubscribed_at = None
        events.append(
            PendingEvent.of(
                subscriber,
                event=ConsentEventType.REQUESTED,
                channel=channel,
                evidence=evidence,
                list_id=list_id,
                consent_text_id=text_id,
                recorded=recorded,
            )
        )
    return events


def terms_in_force(list_ids: list[int]) -> Terms:
    """The consent text version in force for each list, and today's privacy policy.

    One query: what the person is shown and agrees to is the evidence, so it is
    read in the same transaction as the request it is recorded with.
    """
    today = utcnow().date()
    rows = db.session.execute(terms_query(today).where(MailingList.id.in_(list_ids))).all()
    by_id = {row.id: row for row in rows}
    return _terms([by_id[i] for i in list_ids if i in by_id], today)


def terms_query(today: date) -> Select[tuple[int, str, int | None, int | None]]:
    """Lists with their newest consent text and the policy in force on ``today`` (UTC)."""
    newest_text = (
        select(ConsentText.id)
        .where(ConsentText.list_id == MailingList.id)
        .order_by(ConsentText.version.desc())
        .limit(1)
        .scalar_subquery()
    )
    policy = policy_in_force_query(today).scalar_subquery()
    return select(
        MailingList.id,
        MailingList.slug,
        newest_text.label("text_id"),
        policy.label("policy_id"),
    )


def _terms(rows: Sequence[Row[tuple[int, str, int | None, int | None]]], today: date) -> Terms:
    """The rows of ``terms_query`` as Terms; every open list must have a consent text."""
    missing = [row.id for row in rows if row.text_id is None]
    if missing:
        raise LookupError(f"list {missing[0]} has no consent text")
    policy_id = rows[0].policy_id if rows else None
    return Terms(
        texts={row.id: row.text_id for row in rows},
        policy=PolicyInForce(today, policy_id),
    )


def append_all(events: list[PendingEvent], policy: PolicyInForce) -> None:
    """Append the collected events to the ledger one by one, in order (takes the
    head lock); ``policy`` is the one their terms were read with."""
    for event in events:
        append_pending(event, policy)


def maybe_send_confirmation(subscriber: Subscriber) -> bool:
    """Queue one confirmation mail naming every pending list, unless it would repeat one.

    The resend window (CONFIRM_RESEND_WINDOW) is per list, not per address: the
    mail is withheld only when every list now pending is named by a
    confirmation mail queued or sent within the window and not confirmed
    since (its link confirms a list that is pending again). A pending list no
    such mail names gets a mail at once, and that mail names all pending
    lists, so the newest mail alone confirms everything asked for. Repeating a
    request (the same signup, or leaving and rejoining a list on the
    preference page) thus sends at most one mail per window, and each open
    list can add at most one until the mailbox's owner confirms it. The caller
    holds the subscriber's row lock. Returns whether a mail was queued.
    """
    pending = [s for s in subscriber.subscriptions if s.status == SubscriptionStatus.PENDING]
    if not pending:
        return False
    now = utcnow()
    since = now - timedelta(seconds=current_app.config["CONFIRM_RESEND_WINDOW"])
    last = subscriber.last_confirmation_sent_at
    # last_confirmation_sent_at is the newest confirmation mail: when it is older
    # than the window, so are all of them, and no query is needed.
    if last is not None and last > since:
        covered = lists_covered([subscriber.id], since).get(subscriber.id, set())
        if all(s.list_id in covered for s in pending):
            return False
    subscriber.last_confirmation_sent_at = now
    enqueue(OutboxKind.CONFIRM, subscriber, lists=sorted(s.list_id for s in pending))
    return True


def lists_covered(subscriber_ids: Collection[int], since: datetime) -> dict[int, set[int]]:
    """Subscriber id -> the ids of their lists a confirmation mail still stands for.

    A list is covered when a confirmation mail to the subscriber queued or sent
    after ``since`` names it and the list was not confirmed after that mail
    was queued (a confirmation since answered it; a new request needs its own
    mail). A mail the worker skipped (nothing it named was pending any more
    when it came to send it) reached no one, so it covers nothing. Set-based:
    two queries per thousand subscribers, whatever their number.
    """
    ids = list(subscriber_ids)
    covered: dict[int, set[int]] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        newest: dict[tuple[int, int], datetime] = {}  # (subscriber, list) -> newest mail
        mails = db.session.execute(
            select(
                OutboxMessage.subscriber_id, OutboxMessage.payload, OutboxMessage.created_at
            ).where(
                OutboxMessage.subscriber_id.in_(chunk),
                OutboxMessage.kind == OutboxKind.CONFIRM,
                OutboxMessage.status != OutboxStatus.SKIPPED,
                OutboxMessage.created_at > since,
            )
        )
        for subscriber_id, payload, created_at in mails:
            assert subscriber_id is not None
            for list_id in map(int, payload.get("lists", [])):
                key = (subscriber_id, list_id)
                newest[key] = max(created_at, newest.get(key, created_at))
        if not newest:
            continue
        subscriptions = db.session.execute(
            select(
                Subscription.subscriber_id, Subscription.list_id, Subscription.confirmed_at
            ).where(Subscription.subscriber_id.in_(chunk))
        )
        for subscriber_id, list_id, confirmed_at in subscriptions:
            mailed_at = newest.get((subscriber_id, list_id))
            if mailed_at is not None and (confirmed_at is None or confirmed_at < mailed_at):
                covered.setdefault(subscriber_id, set()).add(list_id)
    return covered
