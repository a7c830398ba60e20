"""Withdrawing consent on someone's behalf: a staff member unsubscribes a person
(asked by phone or letter). Recorded in the ledger with channel ``staff`` and
the staff member in the event's details, and in the audit trail.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import select

from ..extensions import db
from ..ledger import Evidence, append_event
from ..models import (
    Channel,
    ConsentEventType,
    MailingList,
    StaffUser,
    Subscriber,
    SubscriptionStatus,
    utcnow,
)
from ..staff import audit
from .erasure import UnknownSubscriber

WITHDRAWABLE = (SubscriptionStatus.ACTIVE, SubscriptionStatus.PENDING)


def withdraw_by_staff(
    subscriber_id: int,
    *,
    list_ids: Collection[int] | None,
    actor: StaffUser,
    evidence: Evidence,
    ip: str | None = None,
) -> list[MailingList]:
    """Unsubscribe from ``list_ids`` (None: every list) at once, and commit.

    Only active or pending subscriptions change; doing it twice logs nothing
    the second time. Returns the lists left.
    """
    subscriber = db.session.scalar(
        select(Subscriber).where(Subscriber.id == subscriber_id).with_for_update()
    )
    if subscriber is None:
        raise UnknownSubscriber(subscriber_id)
    now = utcnow()
    left, changes = [], {}
    for subscription in subscriber.subscriptions:
        if list_ids is not None and subscription.list_id not in list_ids:
            continue
        if subscription.status not in WITHDRAWABLE:
            continue
        slug = subscription.mailing_list.slug
        changes[slug] = {"before": str(subscription.status), "after": "unsubscribed"}
        subscription.status = SubscriptionStatus.UNSUBSCRIBED
        subscription.unsubscribed_at = now
        append_event(
            event=ConsentEventType.WITHDRAWN,
            channel=Channel.STAFF,
            subscriber=subscriber,
            evidence=evidence,
            list_id=subscription.list_id,
            consent_text_id=subscription.consent_text_id,
            # Who did it is part of the evidence: the ledger must show that the
            # person did not click a link themselves.
            details={"staff_id": actor.id, "staff": actor.email},
        )
        left.append(subscription.mailing_list)
    if changes:
        audit.record(
            actor,
            "subscriber.unsubscribe",
            "subscriber",
            subscriber.id,
            details={"subscriptions": changes},
            ip=ip,
        )
    db.session.commit()
    return left
