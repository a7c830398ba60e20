"""Confirmation mails for imported rows without evidence, set-based.

A pending row gets the same confirmation mail a signup would (rendered by the
worker when it is sent), in the outbox in the import's transaction.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from flask import current_app
from sqlalchemy import select, update

from ..bulk import bulk_insert
from ..extensions import db
from ..models import OutboxKind, OutboxMessage, Subscriber, Subscription, SubscriptionStatus
from .validate import ImportRow

CHUNK = 1000
T = TypeVar("T")


class KnownSubscriber(Protocol):
    """What is needed of an existing subscriber (apply._Known)."""

    subscriber_id: int
    last_confirmation_sent_at: datetime | None


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """``items`` in slices of ``size`` (bounded IN lists and executemany batches)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def queue_confirmations(
    rows: list[ImportRow],
    known: Mapping[str, KnownSubscriber],
    ids: dict[str, int],
    list_id: int,
    now: datetime,
) -> None:
    """One confirmation mail per pending row, covering all of that person's pending lists.

    A known address that got a confirmation mail within CONFIRM_RESEND_WINDOW
    gets no second one, as with a signup.
    """
    window = timedelta(seconds=current_app.config["CONFIRM_RESEND_WINDOW"])
    to_mail = [
        ids[r.email_key]
        for r in rows
        if (k := known.get(r.email_key)) is None
        or k.last_confirmation_sent_at is None
        or now - k.last_confirmation_sent_at >= window
    ]
    other_pending: dict[int, set[int]] = {}
    known_ids = [k.subscriber_id for k in known.values()]
    for chunk in chunks(known_ids):
        query = select(Subscription.subscriber_id, Subscription.list_id).where(
            Subscription.subscriber_id.in_(chunk),
            Subscription.status == SubscriptionStatus.PENDING,
        )
        for subscriber_id, other_list in db.session.execute(query):
            other_pending.setdefault(subscriber_id, set()).add(other_list)
    bulk_insert(
        OutboxMessage.__table__,
        [
            {
                "kind": OutboxKind.CONFIRM,
                "subscriber_id": sid,
                "payload": {"lists": sorted(other_pending.get(sid, set()) | {list_id})},
                "created_at": now,
                "next_attempt_at": now,
            }
            for sid in to_mail
        ],
    )
    # New subscribers got last_confirmation_sent_at when they were inserted.
    mailed = set(to_mail)
    mailed_known = [k.subscriber_id for k in known.values() if k.subscriber_id in mailed]
    for chunk in chunks(mailed_known):
        db.session.execute(
            update(Subscriber),
            [{"id": subscriber_id, "last_confirmation_sent_at": now} for subscriber_id in chunk],
        )
