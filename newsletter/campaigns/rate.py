"""SEND_RATE: one token bucket for all workers, kept in the database.

Workers on several machines share the rate through a single row, locked for
the moment it takes to refill and take tokens. The bucket holds at most one
second of tokens (at least one token), so a pause does not turn into a burst.
"""

from __future__ import annotations

import time

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..models import utcnow
from ..models.campaigns import SendRateBucket

# While the bucket is empty, look again after at most this long (a worker
# must stay responsive to SIGTERM and to its outbox).
MAX_WAIT_SECONDS = 1.0


def wait_for_send_tokens(wanted: int) -> int:
    """Take tokens for a batch, waiting while other workers use the whole rate.

    Returns at least one token. An empty bucket must not end a worker's round
    empty-handed: ``worker --once`` takes an empty round for "nothing is due"
    and stopped with most of a rate-limited campaign still queued.
    """
    while True:
        granted, wait = _take(wanted)
        if granted:
            return granted
        time.sleep(wait)  # no transaction is open here


def _take(wanted: int) -> tuple[int, float]:
    """Refill, take up to ``wanted``; return (granted, seconds until a batch is worth it)."""
    rate = float(current_app.config["SEND_RATE"] or 0)
    if rate <= 0:
        return wanted, 0.0
    # At least one whole token fits: with SEND_RATE below 1/s a bucket of
    # ``rate`` tokens never reached one, and nothing was ever sent.
    capacity = max(rate, 1.0)
    locked = select(SendRateBucket).where(SendRateBucket.id == 1).with_for_update()
    bucket = db.session.scalar(locked)
    if bucket is None:
        # The first use. Several workers starting together all find no row; a
        # plain INSERT made all but one fail their round (unique violation on
        # PostgreSQL). In a savepoint the losers go on with the winner's row.
        try:
            with db.session.begin_nested():
                db.session.add(SendRateBucket(id=1, tokens=capacity, updated_at=utcnow()))
        except IntegrityError:
            pass
        bucket = db.session.scalar(locked)
        assert bucket is not None
    now = utcnow()
    elapsed = max((now - bucket.updated_at).total_seconds(), 0.0)
    available = min(capacity, bucket.tokens + elapsed * rate)
    granted = min(wanted, int(available))
    bucket.tokens = available - granted
    bucket.updated_at = now
    db.session.commit()
    # Wait for a batch's worth (or the bucket's), not a single token: waking
    # for every token would mean a database round trip and a batch per token.
    shortfall = min(wanted, capacity) - (available - granted)
    return granted, min(max(shortfall / rate, 0.01), MAX_WAIT_SECONDS)
