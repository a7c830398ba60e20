"""SEND_RATE: one token bucket for all workers, kept in the database.

Workers on several machines share the rate through a single row, locked for
the moment it takes to refill and take tokens. The bucket holds at most one
second of tokens, so a pause does not turn into a burst.
"""

from __future__ import annotations

from flask import current_app
from sqlalchemy import select

from ..extensions import db
from ..models import utcnow
from ..models.campaigns import SendRateBucket


def take_send_tokens(wanted: int) -> int:
    """Take up to ``wanted`` tokens; returns how many were granted (0 = wait)."""
    rate = float(current_app.config["SEND_RATE"] or 0)
    if rate <= 0:
        return wanted
    bucket = db.session.scalar(
        select(SendRateBucket).where(SendRateBucket.id == 1).with_for_update()
    )
    now = utcnow()
    if bucket is None:
        bucket = SendRateBucket(id=1, tokens=rate, updated_at=now)
        db.session.add(bucket)
    elapsed = max((now - bucket.updated_at).total_seconds(), 0.0)
    available = min(rate, bucket.tokens + elapsed * rate)
    granted = min(wanted, int(available))
    bucket.tokens = available - granted
    bucket.updated_at = now
    db.session.commit()
    return granted
