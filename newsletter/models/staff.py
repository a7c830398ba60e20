"""Staff accounts, their audit trail and the console's own settings."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .types import UTCDateTime, str_enum, utcnow


class Role(enum.StrEnum):
    """What a staff member may do; each role includes the ones below it."""

    VIEWER = "viewer"  # read only
    EDITOR = "editor"  # campaigns, lists, subscribers, import
    OWNER = "owner"  # staff accounts, settings, audit log

    @property
    def rank(self) -> int:
        """Order for comparisons: viewer < editor < owner."""
        return _RANKS[self]

    def includes(self, other: Role) -> bool:
        """True when this role may do what ``other`` may do."""
        return self.rank >= other.rank


_RANKS = {Role.VIEWER: 1, Role.EDITOR: 2, Role.OWNER: 3}


class StaffUser(db.Model):  # type: ignore[name-defined]
    """Someone who logs in to /admin."""

    __tablename__ = "staff_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[Role] = mapped_column(str_enum(Role, "role"))
    password_hash: Mapped[str] = mapped_column(String(255))
    # Base32 TOTP secret once enrolment is confirmed; None = no second factor.
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    # The last accepted TOTP time step: a code is never accepted twice.
    totp_last_step: Mapped[int | None] = mapped_column()
    is_active: Mapped[bool] = mapped_column(default=True)
    # Bumped on password change or deactivation: every session of the old
    # version stops working (it is part of the session's user id).
    session_version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    # Flask-Login's user protocol.
    @property
    def is_authenticated(self) -> bool:
        """Any loaded staff user is authenticated."""
        return True

    @property
    def is_anonymous(self) -> bool:
        """Staff users are never anonymous."""
        return False

    def get_id(self) -> str:
        """The session's user id: the account and its session version."""
        return f"{self.id}:{self.session_version}"

    def may(self, role: Role) -> bool:
        """True when this account has ``role`` or a higher one."""
        return self.is_active and self.role.includes(role)

    def __repr__(self) -> str:
        return f"<StaffUser {self.id} {self.role}>"


class AuditEntry(db.Model):  # type: ignore[name-defined]
    """One staff action: who, what, on which object, when, before and after."""

    __tablename__ = "audit_entries"
    __table_args__ = (Index("ix_audit_entries_object", "object_type", "object_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor_id: Mapped[int | None] = mapped_column(
        ForeignKey("staff_users.id", ondelete="SET NULL"), index=True
    )
    # A copy of the actor's address: the entry stays readable if the account goes.
    actor_email: Mapped[str] = mapped_column(String(320), default="")
    action: Mapped[str] = mapped_column(String(64), index=True)
    object_type: Mapped[str] = mapped_column(String(32), default="")
    object_id: Mapped[str] = mapped_column(String(64), default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    ip: Mapped[str | None] = mapped_column(String(64))


class ConsoleSetting(db.Model):  # type: ignore[name-defined]
    """A console-wide setting changed by owners (say, two-factor for everyone)."""

    __tablename__ = "console_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
