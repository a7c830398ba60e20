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
from ..subscriptions.lifecycle import lists_covered
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


def covered_before_import(
    known: Mapping[str, KnownSubscriber], now: datetime
) -> dict[int, set[int]]:
    """Known subscriber id -> the lists a confirmation mail within
    CONFIRM_RESEND_WINDOW still stands for (``lists_covered``, the signup's rule).

    Read before the import writes its subscriptions. Only addresses whose newest
    confirmation mail is within the window are looked up.
    """
    since = now - timedelta(seconds=current_app.config["CONFIRM_RESEND_WINDOW"])
    recent = [
        k.subscriber_id
        for k in known.values()
        if k.last_confirmation_sent_at is not None and k.last_confirmation_sent_at > since
    ]
    return lists_covered(recent, since)


def queue_confirmations(
    rows: list[ImportRow],
    covered: Mapping[int, set[int]],
    known: Mapping[str, KnownSubscriber],
    ids: dict[str, int],
    list_id: int,
    now: datetime,
) -> None:
    """One confirmation mail per pending row, naming all of that person's pending lists.

    As with a signup, the mail is withheld only when every list now pending is
    in ``covered`` (``covered_before_import``): a known address pending on
    another list gets a mail for this one at once, one already mailed for all
    of them within the window gets none.
    """
    pending: dict[int, set[int]] = {}
    known_ids = [k.subscriber_id for k in known.values()]
    for chunk in chunks(known_ids):
        query = select(Subscription.subscriber_id, Subscription.list_id).where(
            Subscription.subscriber_id.in_(chunk),
            Subscription.status == SubscriptionStatus.PENDING,
        )
        for subscriber_id, other_list in db.session.execute(query):
            pending.setdefault(subscriber_id, set()).add(other_list)
    to_mail: dict[int, set[int]] = {}
    for row in rows:
        sid = ids[row.email_key]
        lists = pending.get(sid, set()) | {list_id}
        if not lists <= covered.get(sid, set()):
            to_mail[sid] = lists
    bulk_insert(
        OutboxMessage.__table__,
        [
            {
                "kind": OutboxKind.CONFIRM,
                "subscriber_id": sid,
                "payload": {"lists": sorted(lists)},
                "created_at": now,
                "next_attempt_at": now,
            }
            for sid, lists in to_mail.items()
        ],
    )
    # New subscribers got last_confirmation_sent_at when they were inserted.
    mailed_known = [k.subscriber_id for k in known.values() if k.subscriber_id in to_mail]
    for chunk in chunks(mailed_known):
        db.session.execute(
            update(Subscriber),
            [{"id": subscriber_id, "last_confirmation_sent_at": now} for subscriber_id in chunk],
        )
