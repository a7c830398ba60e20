"""One subscriber as the console shows them: profile, consent timeline, mails sent,
the proof-of-consent document and bundle (downloads of both are audited), and
the verification status of each of their events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from ..extensions import db
from ..ledger.proof import consent_bundle, consent_proof
from ..ledger.status import AddressStatus, address_status, seal_for_proof
from ..models import Campaign, Delivery, DeliveryStatus, StaffUser, Subscriber
from ..staff import audit
from ..transaction import transactional

MAX_DELIVERIES_SHOWN = 100


@dataclass(frozen=True)
class SentMail:
    """One campaign delivery to the subscriber."""

    campaign_id: int
    subject: str
    status: DeliveryStatus
    sent_at: datetime | None
    attempts: int


@dataclass(frozen=True)
class SubscriberReport:
    """Everything the subscriber page shows."""

    subscriber: Subscriber
    proof: dict[str, Any]
    deliveries: list[SentMail]


def subscriber_report(subscriber_id: int) -> SubscriberReport | None:
    """The subscriber with their consent timeline and recent deliveries (None: unknown).

    The timeline is the proof's events, in the order they happened
    (``occurred_at``, ties by ``seq``; see ``consent_proof``), not in ``seq``
    order: a signup's events are appended after it waited in the intake.
    """
    subscriber = db.session.get(Subscriber, subscriber_id)
    if subscriber is None:
        return None
    rows = db.session.execute(
        select(Delivery.campaign_id, Campaign.subject, Delivery.status, Delivery.sent_at)
        .add_columns(Delivery.attempts)
        .join(Campaign, Campaign.id == Delivery.campaign_id)
        .where(Delivery.subscriber_id == subscriber.id)
        .order_by(Delivery.id.desc())
        .limit(MAX_DELIVERIES_SHOWN)
    ).all()
    return SubscriberReport(
        subscriber=subscriber,
        proof=consent_proof(subscriber.email),
        deliveries=[SentMail(*row) for row in rows],
    )


@transactional
def proof_document(
    subscriber_id: int, *, actor: StaffUser, ip: str | None, form: str
) -> dict[str, Any] | None:
    """The proof of consent for a subscriber, with its audit entry in the same transaction.

    ``form`` is ``json`` or ``print``. Handing out evidence is an export of
    personal data, so it leaves a trace like any other.
    """
    subscriber = db.session.get(Subscriber, subscriber_id)
    if subscriber is None:
        return None
    document = consent_proof(subscriber.email)
    audit.record(
        actor, "subscriber.proof", "subscriber", subscriber.id, details={"form": form}, ip=ip
    )
    return document


def proof_status(document: dict[str, Any]) -> AddressStatus:
    """The verification status of each event of a proof document (read only)."""
    return address_status(document["email"])


def proof_bundle(subscriber_id: int, *, actor: StaffUser, ip: str | None) -> dict[str, Any] | None:
    """The subscriber's consent proof bundle, after sealing what waits, audited
    like the proof (``form`` ``bundle``). None for an unknown subscriber; raises
    NothingSealed when no checkpoint could be signed."""
    seal_for_proof()
    return _audited_bundle(subscriber_id, actor=actor, ip=ip)


@transactional
def _audited_bundle(
    subscriber_id: int, *, actor: StaffUser, ip: str | None
) -> dict[str, Any] | None:
    subscriber = db.session.get(Subscriber, subscriber_id)
    if subscriber is None:
        return None
    bundle = consent_bundle(subscriber.email)
    audit.record(
        actor, "subscriber.proof", "subscriber", subscriber.id, details={"form": "bundle"}, ip=ip
    )
    return bundle
