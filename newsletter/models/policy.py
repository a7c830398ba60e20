"""Privacy-policy versions: immutable, each with the date it takes effect."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Date, String, Text, event
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .types import UTCDateTime, text_sha256, utcnow


class PolicyVersion(db.Model):  # type: ignore[name-defined]
    """One version of the data controller's privacy policy, as imported.

    Rows are never updated (an ORM update raises, see below): a changed policy
    is a new version, so every consent event can point at the exact text that
    was in force when it happened.
    """

    __tablename__ = "privacy_policies"

    id: Mapped[int] = mapped_column(primary_key=True)
    # 1, 2, 3 ... in import order; the public URL is /privacy/<version>.
    version: Mapped[int] = mapped_column(unique=True)
    title: Mapped[str] = mapped_column(String(200))
    # The calendar date (UTC) from which this version is the one in force.
    effective_on: Mapped[date] = mapped_column(Date, index=True)
    body_markdown: Mapped[str] = mapped_column(Text)
    # SHA-256 of title, date and body: importing the same file twice is a no-op.
    content_digest: Mapped[str] = mapped_column(String(64), unique=True)
    # SHA-256 (hex) of ``body_markdown`` alone: what ledger leaves bind.
    text_sha256: Mapped[str | None] = mapped_column(
        String(64), default=lambda ctx: text_sha256(ctx, "body_markdown")
    )
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


@event.listens_for(PolicyVersion, "before_update")
def _refuse_update(mapper: Any, connection: Any, target: PolicyVersion) -> None:
    """Versions are immutable: a change of wording must be imported as a new version."""
    raise ValueError(f"privacy policy version {target.version} is immutable")
