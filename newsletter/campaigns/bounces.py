"""Hard bounces: never mail the address again, and say so in the ledger."""

from __future__ import annotations

import logging

from sqlalchemy import select

from ..extensions import db
from ..ledger import Evidence, append_event
from ..ledger.keys import email_digest
from ..models import Channel, ConsentEventType, Subscriber, SubscriptionStatus
from ..models.campaigns import Suppression

log = logging.getLogger(__name__)


def suppress(email_key: str, reason: str) -> bool:
    """Add an address (as its keyed digest) to the suppression list; False if already there."""
    digest = email_digest(email_key)
    if db.session.scalar(select(Suppression.id).where(Suppression.email_digest == digest)):
        return False
    db.session.add(Suppression(email_digest=digest, reason=reason))
    return True


def suppress_after_bounce(email: str, error: str) -> None:
    """A permanent refusal of a recipient: suppress, mark bounced, log the event."""
    email_key = email.casefold()
    subscriber = db.session.scalar(select(Subscriber).where(Subscriber.email_key == email_key))
    if not suppress(email_key, "bounce"):
        db.session.commit()
        return
    if subscriber is not None:
        for subscription in subscriber.subscriptions:
            if subscription.status == SubscriptionStatus.ACTIVE:
                subscription.status = SubscriptionStatus.BOUNCED
        append_event(
            event=ConsentEventType.SUPPRESSED,
            channel=Channel.SYSTEM,
            subscriber=subscriber,
            evidence=Evidence(),
            details={"reason": "bounce", "reply": error[:200]},
        )
    db.session.commit()
    log.info("suppressed an address after a hard bounce")
