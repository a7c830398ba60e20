"""Withdrawing consent: one rule for unsubscribe links, the preference page and staff.

Withdrawal takes effect at once: each active or pending subscription named
becomes unsubscribed and a ``withdrawn`` event is logged for it. The callers
differ only in how the request came (the channel), its evidence, and, when a
staff member acts on the person's behalf, who did it.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..ledger import Evidence
from ..ledger.append import append_pending
from ..ledger.pending import PendingEvent
from ..models import (
    Channel,
    ConsentEventType,
    MailingList,
    StaffUser,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    utcnow,
)
from .lifecycle import ACTIVE_OR_PENDING

# The statuses consent can be withdrawn from.
WITHDRAWABLE = ACTIVE_OR_PENDING


def withdraw(
    subscriber: Subscriber,
    subscriptions: Iterable[Subscription],
    *,
    channel: Channel,
    evidence: Evidence,
    actor: StaffUser | None = None,
) -> dict[MailingList, SubscriptionStatus]:
    """Unsubscribe the active or pending ones of ``subscriptions`` and log each
    withdrawal, in the caller's transaction.

    The others are left as they are, so withdrawing twice logs nothing the
    second time. A staff ``actor`` is named in each event's details, by id
    (a sealed leaf cannot be erased, so it holds no staff address): the ledger
    must show that the person did not click a link themselves. Returns
    each list left with the status it had.
    """
    now = utcnow()
    details = {"staff_id": actor.id} if actor is not None else {}
    left: dict[MailingList, SubscriptionStatus] = {}
    for subscription in subscriptions:
        if subscription.status not in WITHDRAWABLE:
            continue
        left[subscription.mailing_list] = subscription.status
        subscription.status = SubscriptionStatus.UNSUBSCRIBED
        subscription.unsubscribed_at = now
        append_pending(
            PendingEvent.of(
                subscriber,
                event=ConsentEventType.WITHDRAWN,
                channel=channel,
                evidence=evidence,
                list_id=subscription.list_id,
                consent_text_id=subscription.consent_text_id,
                details=details,
            )
        )
    return left
