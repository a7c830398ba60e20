"""Campaigns, their per-recipient deliveries and the shared send rate."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .lists import MailingList
from .types import UTCDateTime, str_enum, utcnow


class CampaignStatus(enum.StrEnum):
    """A campaign's life: draft -> (scheduled ->) sending <-> paused -> done | cancelled."""

    DRAFT = "draft"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    DONE = "done"


class Campaign(db.Model):  # type: ignore[name-defined]
    """One newsletter to one list, written in Markdown."""

    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("lists.id"), index=True)
    subject: Mapped[str] = mapped_column(String(200))
    body_markdown: Mapped[str] = mapped_column(Text)
    sender: Mapped[str] = mapped_column(String(320))
    status: Mapped[CampaignStatus] = mapped_column(
        str_enum(CampaignStatus, "status"), default=CampaignStatus.DRAFT
    )
    is_public: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Rendered once when sending starts (with placeholders for personal parts),
    # so every recipient gets the same content even if the draft were edited.
    # This is the campaign's main rendering, with the layout (footer, link
    # labels) in ``rendered_locale``: NULL for campaigns started before
    # per-language renderings (migration 0006), which were rendered in the
    # default language. The layout in the other languages its recipients
    # needed is in ``renderings``.
    rendered_html: Mapped[str | None] = mapped_column(Text)
    rendered_text: Mapped[str | None] = mapped_column(Text)
    rendered_locale: Mapped[str | None] = mapped_column(String(8))
    # Deliveries a worker claimed after another worker's lease on them ran out,
    # and the upper bound of those the lost worker may have sent without
    # recording it (per lost lease, one fence chunk at most: campaigns/claim.py).
    taken_over: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    possibly_duplicated: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    # Why the campaign paused itself (deliverability/autopause.py): the rule,
    # the rate and the counts behind it. NULL when it did not, or after staff
    # paused or resumed it.
    pause_reason: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    mailing_list: Mapped[MailingList] = relationship()
    renderings: Mapped[list[CampaignRendering]] = relationship(
        back_populates="campaign", cascade="all, delete-orphan", passive_deletes=True
    )


class CampaignRendering(db.Model):  # type: ignore[name-defined]
    """A started campaign rendered with its layout in one more language.

    Subject and body stay as written; only the layout around them (the
    footer's reason, link labels, the ``lang`` attribute) is translated. Made
    once when sending starts, like the campaign's main rendering, for each
    configured language that one of its recipients has besides that one.
    """

    __tablename__ = "campaign_renderings"

    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    locale: Mapped[str] = mapped_column(String(8), primary_key=True)
    html: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)

    campaign: Mapped[Campaign] = relationship(back_populates="renderings")


class DeliveryStatus(enum.StrEnum):
    """One recipient's mail of one campaign."""

    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"  # unsubscribed or suppressed after the campaign started
    CANCELLED = "cancelled"


class Delivery(db.Model):  # type: ignore[name-defined]
    """A recipient of a campaign. Unique per (campaign, subscriber): never two mails."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("campaign_id", "subscriber_id"),
        # Progress counts (GROUP BY status for one campaign) read only this index.
        Index("ix_deliveries_campaign_status", "campaign_id", "status"),
        # Workers look only at queued rows; a partial index keeps that lookup
        # small however many rows have been sent already.
        Index(
            "ix_deliveries_queued",
            "campaign_id",
            "id",
            postgresql_where=text("status = 'queued'"),
            sqlite_where=text("status = 'queued'"),
        ),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(db.Integer, "sqlite"), primary_key=True
    )
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL")
    )
    status: Mapped[DeliveryStatus] = mapped_column(
        str_enum(DeliveryStatus, "status"), default=DeliveryStatus.QUEUED
    )
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    leased_by: Mapped[str | None] = mapped_column(String(64))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(300))


class SendRateBucket(db.Model):  # type: ignore[name-defined]
    """The token bucket behind SEND_RATE, shared by every worker through the database."""

    __tablename__ = "send_rate"

    id: Mapped[int] = mapped_column(primary_key=True)
    tokens: Mapped[float] = mapped_column(default=0.0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
