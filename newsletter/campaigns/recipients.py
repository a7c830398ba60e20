"""Loading a claimed batch, with consent and suppression checked again.

The check is made at claim time, not when the campaign started: someone who
unsubscribed, bounced or was erased since then is skipped, and counted. Each
recipient's language is read then too, so the mail's layout follows it.
"""

from __future__ import annotations

from typing import Any

from flask import current_app
from sqlalchemy import Row, select

from ..database import among
from ..extensions import db
from ..ledger.keys import email_digest, ledger_keys
from ..models import Subscriber, Subscription, SubscriptionStatus
from ..models.campaigns import DeliveryStatus
from ..subscriptions.suppression import suppressed_among
from .claim import Claimed
from .compose import default_locale, layout_locale
from .outcomes import DeliveryBatch, Recipient, mark


def layout_languages(list_id: int) -> list[str]:
    """The layout languages a campaign to the list needs now: those its active
    subscribers read (see compose.layout_locale), the default first when it is
    among them, then in LANGUAGES order; the default alone for an empty list.

    One DISTINCT over the list's active subscriptions, in the transaction that
    starts the campaign and queues the same rows.
    """
    stored = db.session.scalars(
        select(Subscriber.locale)
        .distinct()
        .join(Subscription, Subscription.subscriber_id == Subscriber.id)
        .where(Subscription.list_id == list_id, Subscription.status == SubscriptionStatus.ACTIVE)
    )
    needed = {layout_locale(locale) for locale in stored}
    default = default_locale()
    if not needed:
        return [default]
    others = [
        code for code in current_app.config["LANGUAGES"] if code in needed and code != default
    ]
    return [default, *others] if default in needed else others


def load_recipients(claimed: list[Claimed], batch: DeliveryBatch) -> list[Recipient]:
    """The batch's recipients, skipping anyone no longer active or now suppressed.

    The deliveries themselves came back from the claim; here one query per
    list reads the subscribers with their current subscription status, and one
    reads the suppressions.
    """
    people: dict[tuple[int, int], Row[Any]] = {}
    for list_id in {row.list_id for row in claimed}:
        ids = {
            row.subscriber_id
            for row in claimed
            if row.list_id == list_id and row.subscriber_id is not None
        }
        people.update(((list_id, row.id), row) for row in _subscribers(list_id, ids))
    # Under every ledger key in use: an address suppressed before SECRET_KEY was
    # rotated is stored under the old key's digest and must still be skipped.
    keys = ledger_keys()
    digests = {
        row.email_key: {email_digest(row.email_key, key) for key in keys} for row in people.values()
    }
    suppressed = suppressed_among([d for options in digests.values() for d in options])
    recipients: list[Recipient] = []
    skip: list[int] = []
    for claim in claimed:
        batch.campaigns.add(claim.campaign_id)
        person = people.get((claim.list_id, claim.subscriber_id or 0))
        if (
            person is None  # erased since the start
            or person.status != SubscriptionStatus.ACTIVE
            or not digests[person.email_key].isdisjoint(suppressed)
        ):
            skip.append(claim.id)
            continue
        recipients.append(
            Recipient(
                claim.id,
                claim.campaign_id,
                person.email,
                person.name or "",
                person.token_key,
                claim.list_id,
                claim.attempts,
                layout_locale(person.locale),
            )
        )
    if skip:
        mark(skip, DeliveryStatus.SKIPPED)
        batch.skipped += len(skip)
    return recipients


def _subscribers(list_id: int, ids: set[int]) -> list[Row[Any]]:
    """Subscribers by id, each with the status of their subscription to the list.

    The status is a correlated subquery, not a join: PostgreSQL plans the
    join as a hash join over a full scan of subscriptions (every row of a big
    list matches ``list_id``), where the subquery is one probe of the
    (subscriber_id, list_id) index per person (figures in docs/performance.md).
    """
    status = (
        select(Subscription.status)
        .where(Subscription.subscriber_id == Subscriber.id, Subscription.list_id == list_id)
        .scalar_subquery()
    )
    return list(
        db.session.execute(
            select(
                Subscriber.id,
                Subscriber.email,
                Subscriber.email_key,
                Subscriber.name,
                Subscriber.token_key,
                Subscriber.locale,
                status.label("status"),
            ).where(among(Subscriber.id, ids))
        )
    )
