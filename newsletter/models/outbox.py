"""Durable outgoing mail: written with the change that causes it, sent by a worker."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Enum, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .types import UTCDateTime, str_enum, utcnow


class OutboxKind(enum.StrEnum):
    """Which mail to render at send time."""

    CONFIRM = "confirm"
    WELCOME = "welcome"
    CAMPAIGN_TEST = "campaign_test"  # a campaign's test mail to a staff member
    DATA_EXPORT = "data_export"  # a link to someone's own data (GDPR Art. 15)
    # The day's ledger checkpoint to LEDGER_WITNESS_MAILTO (a witness outside the database).
    LEDGER_CHECKPOINT = "ledger_checkpoint"


class OutboxStatus(enum.StrEnum):
    """Queued until a worker sends it, gives up on it, or finds it no longer applies."""

    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"


# Exactly one recipient: a subscriber, a staff member, or an address from the settings.
ONE_RECIPIENT = (
    "(CASE WHEN subscriber_id IS NULL THEN 0 ELSE 1 END)"
    " + (CASE WHEN staff_user_id IS NULL THEN 0 ELSE 1 END)"
    " + (CASE WHEN address IS NULL THEN 0 ELSE 1 END) = 1"
)
# The kind column: like str_enum, but VARCHAR(32) ("ledger_checkpoint" has 17 characters).
KIND_LENGTH = 32


class OutboxMessage(db.Model):  # type: ignore[name-defined]
    """A mail to send. The content is rendered when sent, from current data:
    an erased subscriber's queued mails go with them (cascade), and a welcome
    mail for a list the person left meanwhile is skipped."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "status", "next_attempt_at"),
        CheckConstraint(ONE_RECIPIENT, name="one_recipient"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[OutboxKind] = mapped_column(
        Enum(
            OutboxKind,
            name="kind",
            native_enum=False,
            create_constraint=True,
            length=KIND_LENGTH,
            values_callable=lambda members: [m.value for m in members],
        )
    )
    # The recipient: a subscriber, a staff member (a campaign's test mail), or
    # an address the operator set (the ledger's witness mail, LEDGER_WITNESS_MAILTO).
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    staff_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("staff_users.id", ondelete="CASCADE")
    )
    address: Mapped[str | None] = mapped_column(String(320))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[OutboxStatus] = mapped_column(
        str_enum(OutboxStatus, "status"),
        default=OutboxStatus.QUEUED,
    )
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A claim: until this time the row belongs to the worker that set it.
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    leased_by: Mapped[str | None] = mapped_column(String(64))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(500))
