"""Steps shared by the lifecycle service: pending lists, confirmation mail, events."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from flask import current_app
from sqlalchemy import select

from ..extensions import db
from ..ledger import Evidence, append_event
from ..ledger.chain import PolicyInForce, policy_in_force_query
from ..mail.outbox import enqueue
from ..models import (
    Channel,
    ConsentEventType,
    ConsentText,
    MailingList,
    OutboxKind,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    utcnow,
)

ACTIVE_OR_PENDING = (SubscriptionStatus.ACTIVE, SubscriptionStatus.PENDING)


def request_lists(
    subscriber: Subscriber, lists: Iterable[MailingList], channel: Channel, evidence: Evidence
) -> list[dict[str, Any]]:
    """Make each list pending unless already active; return the events to log.

    The caller appends them (``append_all``) once its other writes are done.
    """
    existing = {s.list_id: s for s in subscriber.subscriptions}
    wanted = [
        m
        for m in lists
        if m.id not in existing or existing[m.id].status != SubscriptionStatus.ACTIVE
    ]
    if not wanted:
        return []
    texts, policy = terms_in_force([m.id for m in wanted])
    now = utcnow()
    events = []
    for mailing_list in wanted:
        subscription = existing.get(mailing_list.id)
        if subscription is None:
            subscription = Subscription(list_id=mailing_list.id, mailing_list=mailing_list)
            subscriber.subscriptions.append(subscription)
        subscription.status = SubscriptionStatus.PENDING
        subscription.consent_text_id = texts[mailing_list.id]
        subscription.requested_at = now
        subscription.unsubscribed_at = None
        events.append(
            {
                "event": ConsentEventType.REQUESTED,
                "channel": channel,
                "subscriber": subscriber,
                "evidence": evidence,
                "list_id": mailing_list.id,
                "consent_text_id": texts[mailing_list.id],
                "policy": policy,
            }
        )
    return events


def terms_in_force(list_ids: list[int]) -> tuple[dict[int, int], PolicyInForce]:
    """The consent text version in force for each list, and today's privacy policy.

    One query: what the person is shown and agrees to is the evidence, so it is
    read in the same transaction as the request it is recorded with.
    """
    today = utcnow().date()
    newest_text = (
        select(ConsentText.id)
        .where(ConsentText.list_id == MailingList.id)
        .order_by(ConsentText.version.desc())
        .limit(1)
        .scalar_subquery()
    )
    policy = policy_in_force_query(today).scalar_subquery()
    rows = db.session.execute(
        select(MailingList.id, newest_text, policy).where(MailingList.id.in_(list_ids))
    ).all()
    texts = {list_id: text_id for list_id, text_id, _ in rows}
    missing = [i for i in list_ids if texts.get(i) is None]
    if missing:
        raise LookupError(f"list {missing[0]} has no consent text")
    return texts, PolicyInForce(today, rows[0][2])


def append_all(events: list[dict[str, Any]]) -> None:
    """Append the collected events to the ledger, in order (takes the head lock)."""
    for event in events:
        append_event(**event)


def maybe_send_confirmation(subscriber: Subscriber, *, respect_window: bool) -> bool:
    """Queue one confirmation mail covering every pending list, if allowed now."""
    pending = sorted(
        s.list_id for s in subscriber.subscriptions if s.status == SubscriptionStatus.PENDING
    )
    if not pending:
        return False
    now = utcnow()
    window = timedelta(seconds=current_app.config["CONFIRM_RESEND_WINDOW"])
    last = subscriber.last_confirmation_sent_at
    if respect_window and last is not None and now - last < window:
        return False
    subscriber.last_confirmation_sent_at = now
    enqueue(OutboxKind.CONFIRM, subscriber, lists=pending)
    return True
