"""Recording what happened to deliveries: sent or skipped, failed, retried later."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flask import current_app

from ..deliverability.reports import IncomingReport, record_report
from ..extensions import db
from ..fence import BatchCounts
from ..lease import Lease, settle
from ..mail.retry import next_attempt
from ..mail.transport import PermanentFailure, ServerUnavailable
from ..models import BounceKind, utcnow
from ..models.campaigns import DeliveryStatus
from .claim import DELIVERIES


@dataclass
class DeliveryBatch(BatchCounts):
    """Outcome counts of one batch, and the campaigns it touched."""

    campaigns: set[int] = field(default_factory=set)
    unrecorded: int = 0  # sent, but the lease was lost before they were marked
    lost: bool = False  # the batch stopped because its lease was no longer its own


@dataclass(frozen=True)
class Recipient:
    """What the send loop needs of one delivery."""

    delivery_id: int
    campaign_id: int
    email: str
    name: str
    token_key: str
    list_id: int
    attempts: int
    locale: str = ""  # the language of the mail's layout (a configured one)


def mark(ids: list[int], status: DeliveryStatus) -> None:
    """Set the final status of many rows in one UPDATE (sent also stamps sent_at)."""
    values: dict[str, Any] = {"status": status}
    if status == DeliveryStatus.SENT:
        values["sent_at"] = utcnow()
    settle(DELIVERIES, ids, **values)
    db.session.commit()


def fail(recipient: Recipient, failure: PermanentFailure, lease: Lease | None = None) -> None:
    """A permanent refusal: the delivery fails; a hard bounce also suppresses the
    address, in the same transaction, so a crash cannot keep one without the other.
    With ``lease``, only a row the lease still holds is touched."""
    error = str(failure)
    settle(
        DELIVERIES, [recipient.delivery_id], lease=lease, error=error, status=DeliveryStatus.FAILED
    )
    if failure.hard_bounce:  # commits, counted with the campaign's other bounces
        record_report(
            IncomingReport(
                kind=BounceKind.HARD,
                source="smtp",
                dedupe_key=f"delivery:{recipient.delivery_id}",
                recipient=recipient.email,
                diagnostic=error,
                delivery_id=recipient.delivery_id,
            )
        )
    else:
        db.session.commit()


def is_outage(exc: BaseException) -> bool:
    """The server is unavailable to us: says nothing about the recipient."""
    return isinstance(exc, ServerUnavailable)


def retry(
    items: list[tuple[Recipient, str]], *, outage: bool = False, lease: Lease | None = None
) -> None:
    """Schedule another attempt per mail.retry (an outage never fails a delivery).
    With ``lease``, only rows the lease still holds are touched."""
    config = current_app.config
    for recipient, error in items:
        attempts = recipient.attempts + 1
        values: dict[str, Any] = {"attempts": attempts}
        when = next_attempt(
            attempts,
            base_seconds=config["DELIVERY_RETRY_BASE_SECONDS"],
            max_attempts=config["DELIVERY_MAX_ATTEMPTS"],
            outage=outage,
        )
        if when is None:
            values["status"] = DeliveryStatus.FAILED
        else:
            values["next_attempt_at"] = when
        settle(DELIVERIES, [recipient.delivery_id], lease=lease, error=error, **values)
    db.session.commit()
