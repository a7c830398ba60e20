"""Bounce and complaint reports: every one received, once, with what was done."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .types import UTCDateTime, utcnow


class BounceKind(enum.StrEnum):
    """What a report says about a mail."""

    HARD = "hard"
    SOFT = "soft"
    COMPLAINT = "complaint"
    AUTO_REPLY = "auto_reply"


class BounceReport(db.Model):  # type: ignore[name-defined]
    """One bounce, complaint or auto-reply, from an SMTP refusal, the bounce
    mailbox or a provider's webhook.

    ``dedupe_digest`` (SHA-256 of the report's own id) is unique: the same DSN
    or webhook event received twice is recorded, and acted on, once. The
    person is named by the keyed ``email_digest`` (as on the suppression list),
    never by address; the diagnostic has its addresses redacted.
    """

    __tablename__ = "bounce_reports"
    __table_args__ = (Index("ix_bounce_reports_email_kind", "email_digest", "kind", "received_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    occurred_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    dedupe_digest: Mapped[str] = mapped_column(String(64), unique=True)
    email_digest: Mapped[str | None] = mapped_column(String(64))
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL")
    )
    campaign_id: Mapped[int | None] = mapped_column(
        ForeignKey("campaigns.id", ondelete="SET NULL"), index=True
    )
    delivery_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("deliveries.id", ondelete="SET NULL"),
    )
    diagnostic: Mapped[str] = mapped_column(String(300), default="")
    action: Mapped[str] = mapped_column(String(32))
