"""CSV imports: the uploaded file and its progress, worked through in the background."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .types import UTCDateTime, str_enum, utcnow


class ImportStatus(enum.StrEnum):
    """uploaded -> queued -> running -> done | failed (nothing imported)."""

    UPLOADED = "uploaded"  # waiting for the column mapping
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class ImportJob(db.Model):  # type: ignore[name-defined]
    """One CSV file to import into one list, whole or not at all.

    The file lives in the row (not on a web host's disk) so that any worker on
    any machine can run the import.
    """

    __tablename__ = "import_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("lists.id"))
    created_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("staff_users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    filename: Mapped[str] = mapped_column(String(255), default="")
    content: Mapped[str | None] = mapped_column(Text)
    # CSV column -> field (email, name, consented_at, source); None = not chosen.
    mapping: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[ImportStatus] = mapped_column(
        str_enum(ImportStatus, "status"), default=ImportStatus.UPLOADED
    )
    total_rows: Mapped[int] = mapped_column(default=0)
    processed_rows: Mapped[int] = mapped_column(default=0)
    imported_active: Mapped[int] = mapped_column(default=0)
    imported_pending: Mapped[int] = mapped_column(default=0)
    unchanged: Mapped[int] = mapped_column(default=0)
    # [{"line": 7, "field": "email", "message": "..."}], at most a few hundred.
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
