"""Durable outgoing mail: written with the change that causes it, sent by a worker."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .types import UTCDateTime, str_enum, utcnow


class OutboxKind(enum.StrEnum):
    """Which mail to render at send time."""

    CONFIRM = "confirm"
    WELCOME = "welcome"
    CAMPAIGN_TEST = "campaign_test"  # a campaign's test mail to a staff member
    DATA_EXPORT = "data_export"  # a link to someone's own data (GDPR Art. 15)


class OutboxStatus(enum.StrEnum):
    """Queued until a worker sends it, gives up on it, or finds it no longer applies."""

    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"


class OutboxMessage(db.Model):  # type: ignore[name-defined]
    """A mail to send. The content is rendered when sent, from current data:
    an erased subscriber's queued mails go with them (cascade), and a welcome
    mail for a list the person left meanwhile is skipped."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "status", "next_attempt_at"),
        CheckConstraint("(subscriber_id IS NULL) <> (staff_user_id IS NULL)", name="one_recipient"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[OutboxKind] = mapped_column(str_enum(OutboxKind, "kind"))
    # The recipient: a subscriber, or (for a campaign's test mail) a staff member.
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    staff_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("staff_users.id", ondelete="CASCADE")
    )
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
