"""When to try a mail again: one policy for the outbox and for campaign deliveries."""

from __future__ import annotations

from datetime import datetime, timedelta

from ..models import utcnow

# The longest wait between tries while the SMTP server is unavailable: short
# enough that sending resumes soon after an outage ends.
OUTAGE_MAX_BACKOFF = 15 * 60
# The longest wait between tries for a recipient the server keeps deferring.
MAX_BACKOFF = 6 * 3600


def next_attempt(
    attempts: int, *, base_seconds: float, max_attempts: int, outage: bool
) -> datetime | None:
    """The time of the next try after ``attempts`` failed ones, or None to give up.

    Exponential backoff from ``base_seconds``. An outage (server unreachable,
    our sender refused, no MAIL_SERVER) is not the recipient's fault: it never
    gives up and waits at most OUTAGE_MAX_BACKOFF. Without that, an outage of
    a couple of hours would fail every queued mail: lost in all but name.
    """
    delay = base_seconds * 2 ** min(attempts - 1, 20)
    if outage:
        return utcnow() + timedelta(seconds=min(delay, OUTAGE_MAX_BACKOFF))
    if attempts >= max_attempts:
        return None
    return utcnow() + timedelta(seconds=min(delay, MAX_BACKOFF))
