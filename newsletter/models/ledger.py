"""The append-only consent ledger: consent events in a keyed hash chain, and its head."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .types import UTCDateTime, utcnow


class ConsentEventType(enum.StrEnum):
    """What happened to someone's consent."""

    REQUESTED = "requested"
    CONFIRMED = "confirmed"
    WITHDRAWN = "withdrawn"
    IMPORTED = "imported"
    ERASED = "erased"
    SUPPRESSED = "suppressed"
    PREFERENCES_CHANGED = "preferences_changed"


class Channel(enum.StrEnum):
    """How the event reached us: part of the evidence."""

    FORM = "form"
    API = "api"
    CONFIRM_LINK = "confirm_link"
    ONE_CLICK = "one_click"
    UNSUBSCRIBE_PAGE = "unsubscribe_page"
    MANAGE_PAGE = "manage_page"
    STAFF = "staff"
    IMPORT = "import"
    SYSTEM = "system"


class ConsentEvent(db.Model):  # type: ignore[name-defined]
    """One event in the hash chain.

    Personal fields (email, ip, user_agent, source_url) enter the row hash only
    through ``personal_digest``, a keyed digest of them; erasure nulls the
    fields and keeps the digest, so the chain still verifies afterwards.
    """

    __tablename__ = "consent_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(unique=True)
    # When it happened: a signup's events carry the request's time, though the
    # worker appends them later, so ``seq`` order is not time order. Indexed
    # for windows by time (the dashboard's last 90 days).
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    event: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(32))
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL"), index=True
    )
    list_id: Mapped[int | None] = mapped_column(ForeignKey("lists.id"))
    consent_text_id: Mapped[int | None] = mapped_column(ForeignKey("consent_texts.id"))
    # The privacy policy in force when the event happened. NULL on
    # events from before policy versions existed, or while none is imported;
    # the row hash covers it whenever it is set (see ledger.chain.row_hash).
    policy_version_id: Mapped[int | None] = mapped_column(ForeignKey("privacy_policies.id"))
    # Keyed pseudonym of the address: survives erasure so a disputed address
    # can still be matched, but reveals nothing without the ledger key.
    email_digest: Mapped[str] = mapped_column(String(64), index=True)
    email: Mapped[str | None] = mapped_column(String(320))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    source_url: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    personal_digest: Mapped[str] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    row_hash: Mapped[str] = mapped_column(String(64))


class LedgerHead(db.Model):  # type: ignore[name-defined]
    """The single row naming the last event: appends lock it, verify checks it.

    Locking one row serialises appends so every event sees its predecessor, and
    it lets verify notice a deleted last event.
    """

    __tablename__ = "ledger_head"

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(default=0)
    row_hash: Mapped[str] = mapped_column(String(64))
