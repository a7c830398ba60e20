"""Withdrawing consent on someone's behalf: a staff member unsubscribes a person
(asked by phone or letter). The withdrawal is the subscriptions feature's own
(``subscriptions.withdrawal.withdraw``), with channel ``staff`` and the staff
member named in each event; the audit trail records it in the same transaction.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import select

from ..extensions import db
from ..ledger import Evidence
from ..models import Channel, MailingList, StaffUser, Subscriber, SubscriptionStatus
from ..staff import audit
from ..subscriptions.withdrawal import withdraw
from ..transaction import transactional
from .erasure import UnknownSubscriber


@transactional
def withdraw_by_staff(
    subscriber_id: int,
    *,
    list_ids: Collection[int] | None,
    actor: StaffUser,
    evidence: Evidence,
    ip: str | None = None,
) -> list[MailingList]:
    """Unsubscribe from ``list_ids`` (None: every list) at once, with an audit entry.

    Only active or pending subscriptions change; doing it twice logs nothing
    the second time. Returns the lists left.
    """
    subscriber = db.session.scalar(
        select(Subscriber).where(Subscriber.id == subscriber_id).with_for_update()
    )
    if subscriber is None:
        raise UnknownSubscriber(subscriber_id)
    named = [s for s in subscriber.subscriptions if list_ids is None or s.list_id in list_ids]
    left = withdraw(subscriber, named, channel=Channel.STAFF, evidence=evidence, actor=actor)
    if left:
        unsubscribed = str(SubscriptionStatus.UNSUBSCRIBED)
        changes = {
            mailing_list.slug: {"before": str(before), "after": unsubscribed}
            for mailing_list, before in left.items()
        }
        audit.record(
            actor,
            "subscriber.unsubscribe",
            "subscriber",
            subscriber.id,
            details={"subscriptions": changes},
            ip=ip,
        )
    return list(left)
