"""Signups waiting for a worker: what a public signup request stores before it answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .types import UTCDateTime


class SignupIntake(db.Model):  # type: ignore[name-defined]
    """One public signup as received: all the evidence its ledger events need.

    A request writes this row and nothing else, the same for every address;
    a worker claims it (lease columns), does what the signup asks for and
    deletes the row in the same transaction. A row that cannot be processed
    keeps ``failed_at`` and ``last_error`` and waits for staff. No index on
    the address: nothing in the request looks it up, and the table holds
    only what is waiting (erasure and the data export scan it).

    ``terms`` is ``[[list_id, consent_text_id], ...]`` in the order asked for:
    the consent text version of each list in force when the request came, as
    ``policy_version_id`` is the privacy policy's (None before any import).
    """

    __tablename__ = "signup_intake"

    id: Mapped[int] = mapped_column(primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    channel: Mapped[str] = mapped_column(String(32))
    email: Mapped[str] = mapped_column(String(320))
    email_key: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200), default="")
    locale: Mapped[str | None] = mapped_column(String(16))
    terms: Mapped[list[Any]] = mapped_column(JSON)
    policy_version_id: Mapped[int | None] = mapped_column()
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    source_url: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    leased_by: Mapped[str | None] = mapped_column(String(64))
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(300))
