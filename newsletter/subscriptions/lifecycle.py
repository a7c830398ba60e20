"""Steps shared by the lifecycle service: pending lists, confirmation mail, events."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from flask import current_app

from ..ledger import Evidence, append_event
from ..mail.outbox import enqueue
from ..models import (
    Channel,
    ConsentEventType,
    MailingList,
    OutboxKind,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    utcnow,
)
from .lists import current_consent_text

ACTIVE_OR_PENDING = (SubscriptionStatus.ACTIVE, SubscriptionStatus.PENDING)


def request_lists(
    subscriber: Subscriber, lists: Iterable[MailingList], channel: Channel, evidence: Evidence
) -> list[dict[str, Any]]:
    """Make each list pending unless already active; return the events to log.

    The caller appends them (``append_all``) once its other writes are done.
    """
    existing = {s.list_id: s for s in subscriber.subscriptions}
    now = utcnow()
    events = []
    for mailing_list in lists:
        subscription = existing.get(mailing_list.id)
        if subscription is not None and subscription.status == SubscriptionStatus.ACTIVE:
            continue
        text = current_consent_text(mailing_list.id)
        if subscription is None:
            subscription = Subscription(list_id=mailing_list.id, mailing_list=mailing_list)
            subscriber.subscriptions.append(subscription)
        subscription.status = SubscriptionStatus.PENDING
        subscription.consent_text_id = text.id
        subscription.requested_at = now
        subscription.unsubscribed_at = None
        events.append(
            {
                "event": ConsentEventType.REQUESTED,
                "channel": channel,
                "subscriber": subscriber,
                "evidence": evidence,
                "list_id": mailing_list.id,
                "consent_text_id": text.id,
            }
        )
    return events


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
