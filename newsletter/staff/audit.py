"""The audit trail: every staff action, written in the transaction that makes it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..extensions import db
from ..models import AuditEntry, StaffUser


def record(
    actor: StaffUser | None,
    action: str,
    object_type: str = "",
    object_id: object = "",
    *,
    details: Mapping[str, Any] | None = None,
    ip: str | None = None,
) -> AuditEntry:
    """Add an audit entry to the session; the caller's commit writes it.

    ``actor`` None means the command line (no logged-in person): the entry
    says so, so nothing happens without a trace.
    """
    entry = AuditEntry(
        actor_id=actor.id if actor else None,
        actor_email=actor.email if actor else "(command line)",
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        details=dict(details or {}),
        ip=ip,
    )
    db.session.add(entry)
    return entry


def changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The fields that differ, as {"field": {"before": old, "after": new}}."""
    return {
        key: {"before": before.get(key), "after": after.get(key)}
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    }
