"""The data model. Import from here: ``from newsletter.models import Subscriber``."""

from .bounces import BounceKind, BounceReport
from .campaigns import (
    Campaign,
    CampaignStatus,
    Delivery,
    DeliveryStatus,
    SendRateBucket,
)
from .imports import ImportJob, ImportStatus
from .intake import SignupIntake
from .ledger import (
    Channel,
    ConsentEvent,
    ConsentEventType,
    LedgerCheckpoint,
    LedgerHead,
    LedgerKey,
    LedgerNode,
    LedgerTree,
)
from .lists import ConsentText, MailingList
from .outbox import OutboxKind, OutboxMessage, OutboxStatus
from .policy import PolicyVersion
from .staff import AuditEntry, ConsoleSetting, Role, StaffUser
from .subscribers import Subscriber, Subscription, SubscriptionStatus
from .suppression import Suppression
from .types import UTCDateTime, utcnow

__all__ = [
    "AuditEntry",
    "BounceKind",
    "BounceReport",
    "Campaign",
    "CampaignStatus",
    "Channel",
    "ConsentEvent",
    "ConsentEventType",
    "ConsentText",
    "ConsoleSetting",
    "Delivery",
    "DeliveryStatus",
    "ImportJob",
    "ImportStatus",
    "LedgerCheckpoint",
    "LedgerHead",
    "LedgerKey",
    "LedgerNode",
    "LedgerTree",
    "MailingList",
    "OutboxKind",
    "OutboxMessage",
    "OutboxStatus",
    "PolicyVersion",
    "Role",
    "SendRateBucket",
    "SignupIntake",
    "StaffUser",
    "Subscriber",
    "Subscription",
    "SubscriptionStatus",
    "Suppression",
    "UTCDateTime",
    "utcnow",
]
