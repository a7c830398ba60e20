"""Hard bounces: never mail the address again, and say so in the ledger.

Only a refusal that says the *address* is bad is a hard bounce. A permanent
failure can have other causes that say nothing about the recipient: our
sender refused at MAIL FROM, the message refused at DATA, a relay without
SMTPUTF8, a policy block (5.7.x). Suppressing on those would wipe out a whole
list over one configuration error, with ledger events that cannot be taken
back; the delivery fails, the address stays.
"""

from __future__ import annotations

import logging
import re

from sqlalchemy import select

from ..extensions import db
from ..ledger import Evidence, append_event
from ..models import Channel, ConsentEventType, Subscriber, SubscriptionStatus
from ..subscriptions import suppression
from ..transaction import transactional

log = logging.getLogger(__name__)
# Anything shaped like an address in an SMTP reply ("550 5.1.1 <jane@example.org>:
# Recipient address rejected").
ADDRESS_IN_REPLY = re.compile(r"[^\s<>()\[\]\"',;:]+@[^\s<>()\[\]\"',;:]+")


def redacted_reply(reply: str) -> str:
    """An SMTP reply with every address in it replaced by ``<address>``.

    The reply goes into the ledger event's details, which are hashed: what is
    written there can never be removed again, so erasure (GDPR Art. 17) could
    not take the address out. The status code and text are what matter later.
    """
    return ADDRESS_IN_REPLY.sub("<address>", reply)[:200]


@transactional
def suppress_after_bounce(email: str, error: str) -> None:
    """A hard bounce (see mail.transport.is_hard_bounce): suppress the address,
    mark its subscriptions bounced and log the event, once per address; the
    caller's pending writes are committed with it."""
    email_key = email.casefold()
    subscriber = db.session.scalar(select(Subscriber).where(Subscriber.email_key == email_key))
    if not suppression.add(email_key, suppression.BOUNCE):
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
            details={"reason": suppression.BOUNCE, "reply": redacted_reply(error)},
        )
    log.info("suppressed an address after a hard bounce")
