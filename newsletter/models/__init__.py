"""The data model. Import from here: ``from newsletter.models import Subscriber``."""

from .ledger import Channel, ConsentEvent, ConsentEventType, LedgerHead
from .lists import ConsentText, MailingList
from .outbox import OutboxKind, OutboxMessage, OutboxStatus
from .subscribers import Subscriber, Subscription, SubscriptionStatus
from .types import UTCDateTime, utcnow

__all__ = [
    "Channel",
    "ConsentEvent",
    "ConsentEventType",
    "ConsentText",
    "LedgerHead",
    "MailingList",
    "OutboxKind",
    "OutboxMessage",
    "OutboxStatus",
    "Subscriber",
    "Subscription",
    "SubscriptionStatus",
    "UTCDateTime",
    "utcnow",
]
