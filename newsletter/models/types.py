"""Column types shared by the models."""

from __future__ import annotations

import enum
import hashlib
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Enum
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


def text_sha256(context: Any, column: str) -> str:
    """Column default: the SHA-256 (hex) of the UTF-8 text inserted into ``column``."""
    text = context.get_current_parameters()[column]
    return hashlib.sha256(text.encode()).hexdigest()


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A UTC timestamp that comes back timezone-aware on every backend.

    SQLite keeps no zone; PostgreSQL's ``timestamptz`` would convert to the
    session's zone. Storing naive UTC and tagging it on the way out gives the
    same value everywhere, and refusing naive input keeps local times out.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert an aware datetime to naive UTC for storage."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Tag a stored naive UTC value as UTC."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


def str_enum(kind: type[enum.StrEnum], name: str) -> Enum:
    """A portable enum column: VARCHAR(16) plus a named CHECK constraint.

    Not a native PostgreSQL enum: adding a value later is then a plain
    constraint change, the same on SQLite and PostgreSQL.
    """
    return Enum(
        kind,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [m.value for m in members],
    )
