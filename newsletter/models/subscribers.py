"""Subscribers and their per-list subscriptions."""

from __future__ import annotations

import enum
import secrets
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .lists import ConsentText, MailingList
from .types import UTCDateTime, str_enum, utcnow


def new_token_key() -> str:
    """A random handle for links: tokens name it instead of the e-mail address."""
    return secrets.token_urlsafe(16)


class Subscriber(db.Model):  # type: ignore[name-defined]
    """A person, known by one normalised e-mail address."""

    __tablename__ = "subscribers"
    # Staff search by address or name fragment (admin.subscribers). On PostgreSQL
    # these are trigram GIN indexes, which serve LIKE/ILIKE '%fragment%' at a
    # million rows; SQLite has no trigram index and gets a plain b-tree of the
    # same name (migration 0004), so the schema is the same shape everywhere.
    __table_args__ = (
        Index(
            "ix_subscribers_email_key_trgm",
            "email_key",
            postgresql_using="gin",
            postgresql_ops={"email_key": "gin_trgm_ops"},
        ),
        Index(
            "ix_subscribers_name_trgm",
            "name",
            postgresql_using="gin",
            postgresql_ops={"name": "gin_trgm_ops"},
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # The address as validated (domain lower-cased, Unicode normalised) for sending.
    email: Mapped[str] = mapped_column(String(320))
    # The same, case-folded: the one form per address that uniqueness is checked on.
    email_key: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    locale: Mapped[str] = mapped_column(String(8), default="da")
    # Signed links carry this random key, never the address; replacing it
    # revokes every link sent so far.
    token_key: Mapped[str] = mapped_column(String(32), unique=True, default=new_token_key)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_confirmation_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    subscriptions: Mapped[list[Subscription]] = relationship(
        back_populates="subscriber", cascade="all, delete-orphan"
    )


class SubscriptionStatus(enum.StrEnum):
    """Where a subscriber stands on one list."""

    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"


class Subscription(db.Model):  # type: ignore[name-defined]
    """A subscriber's state on one list, with the consent text they were shown."""

    __tablename__ = "subscriptions"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "list_id"),
        # The staff list filtered by list and status, newest subscriber first,
        # reads this index in order and stops after one page; the dashboard's
        # counts per list and status are an index-only scan of it.
        Index("ix_subscriptions_list_status_subscriber", "list_id", "status", "subscriber_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    list_id: Mapped[int] = mapped_column(ForeignKey("lists.id"), index=True)
    status: Mapped[SubscriptionStatus] = mapped_column(
        str_enum(SubscriptionStatus, "status"),
        default=SubscriptionStatus.PENDING,
    )
    consent_text_id: Mapped[int] = mapped_column(ForeignKey("consent_texts.id"))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    subscriber: Mapped[Subscriber] = relationship(back_populates="subscriptions")
    mailing_list: Mapped[MailingList] = relationship()
    consent_text: Mapped[ConsentText] = relationship()
