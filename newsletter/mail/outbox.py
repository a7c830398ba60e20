"""Putting mail in the outbox, inside the caller's transaction."""

from __future__ import annotations

from typing import Any

from ..extensions import db
from ..models import OutboxKind, OutboxMessage, Subscriber, utcnow


def enqueue(kind: OutboxKind, subscriber: Subscriber, **payload: Any) -> OutboxMessage:
    """Add a mail to the outbox; it is sent once the caller's transaction commits."""
    message = OutboxMessage(
        kind=kind, subscriber_id=subscriber.id, payload=payload, next_attempt_at=utcnow()
    )
    db.session.add(message)
    return message
