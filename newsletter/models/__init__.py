"""The data model. Import from here: ``from newsletter.models import Subscriber``."""

from .campaigns import (
    Campaign,
    CampaignStatus,
    Delivery,
    DeliveryStatus,
    SendRateBucket,
    Suppression,
)
from .ledger import Channel, ConsentEvent, ConsentEventType, LedgerHead
from .lists import ConsentText, MailingList
from .outbox import OutboxKind, OutboxMessage, OutboxStatus
from .subscribers import Subscriber, Subscription, SubscriptionStatus
from .types import UTCDateTime, utcnow

__all__ = [
    "Campaign",
    "CampaignStatus",
    "Channel",
    "ConsentEvent",
    "ConsentEventType",
    "ConsentText",
    "Delivery",
    "DeliveryStatus",
    "LedgerHead",
    "MailingList",
    "OutboxKind",
    "OutboxMessage",
    "OutboxStatus",
    "SendRateBucket",
    "Subscriber",
    "Subscription",
    "SubscriptionStatus",
    "Suppression",
    "UTCDateTime",
    "utcnow",
]
