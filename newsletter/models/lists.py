"""Mailing lists (topics) and the immutable versions of their consent texts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .types import UTCDateTime, text_sha256, utcnow


class MailingList(db.Model):  # type: ignore[name-defined]
    """A topic people subscribe to, each with its own consent."""

    __tablename__ = "lists"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    is_default: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    consent_texts: Mapped[list[ConsentText]] = relationship(
        back_populates="mailing_list", order_by="ConsentText.version"
    )

    def __repr__(self) -> str:
        return f"<MailingList {self.slug}>"


class ConsentText(db.Model):  # type: ignore[name-defined]
    """One version of what a person agrees to when subscribing to a list.

    Rows are never updated: a change of wording is a new version, so the ledger
    can always show the exact text someone was shown.
    """

    __tablename__ = "consent_texts"
    __table_args__ = (UniqueConstraint("list_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("lists.id"))
    version: Mapped[int]
    text: Mapped[str] = mapped_column(Text)
    # SHA-256 (hex) of ``text`` as written: ledger leaves bind the text by this
    # hash, and ``ledger verify`` names a text whose hash no longer matches.
    sha256: Mapped[str | None] = mapped_column(
        String(64), default=lambda ctx: text_sha256(ctx, "text")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    mailing_list: Mapped[MailingList] = relationship(back_populates="consent_texts")
