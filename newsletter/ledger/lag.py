"""Is sealing keeping up? One rule for the dashboard and ``newsletter check``.

Events are appended with only a ``seq``; the worker seals them under a signed
checkpoint within LEDGER_SEAL_INTERVAL seconds. Sealing lags when events wait
and the oldest of them has waited longer than LAG_FACTOR intervals.

No column records when an event was appended, so its wait is bounded from
the times that are stored: the oldest waiting event (``seq`` = sealed size + 1)
was appended after the latest checkpoint was signed (a seal takes every event
appended before it) and after the event occurred (``occurred_at``, the request
time, is taken before the append). Its wait is therefore at most
``now - max(latest checkpoint's signed_at, its occurred_at)``, and the rule
compares that bound with LAG_FACTOR intervals: a lag is never missed, and a
quiet ledger (an old checkpoint, one fresh event) is not mistaken for one.
The bound can overstate the wait of an event whose request waited long for
the worker (the signup intake) after a long quiet spell: that warning lasts
until the next seal, at most one interval.

SEAL_STATE reads all of it in one query, on the app's session or on a plain
connection (``newsletter check`` builds no app).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from ..extensions import db
from ..models import ConsentEvent, LedgerCheckpoint, LedgerHead, utcnow

# Sealing lags when the oldest waiting event has waited this many intervals.
LAG_FACTOR = 3

_LATEST = select(LedgerCheckpoint).order_by(LedgerCheckpoint.size.desc()).limit(1).subquery()
_SIZE = select(_LATEST.c.size).scalar_subquery()
# The ledger head, the latest checkpoint's size and signing time, and the
# request time of the oldest waiting event (if any): one query.
SEAL_STATE = select(
    select(LedgerHead.seq).where(LedgerHead.id == 1).scalar_subquery(),
    _SIZE,
    select(_LATEST.c.signed_at).scalar_subquery(),
    select(ConsentEvent.occurred_at)
    .where(ConsentEvent.seq == func.coalesce(_SIZE, 0) + 1)
    .scalar_subquery(),
)


@dataclass(frozen=True)
class SealState:
    """The ledger's sealing as staff see it."""

    head: int  # events appended
    size: int | None  # events under the latest checkpoint; None: no checkpoint yet
    signed_at: datetime | None  # when the latest checkpoint was signed
    first_waiting_at: datetime | None  # occurred_at of the oldest waiting event

    @classmethod
    def of(cls, row: Any) -> SealState:
        """The state from a row of SEAL_STATE."""
        size = None if row[1] is None else int(row[1])
        return cls(int(row[0] or 0), size, row[2], row[3])

    @property
    def waiting(self) -> int:
        """Events appended but not under a checkpoint yet."""
        return max(self.head - (self.size or 0), 0)

    def age(self, now: datetime | None = None) -> float | None:
        """Seconds since the latest checkpoint was signed; None without one."""
        if self.signed_at is None:
            return None
        return ((now or utcnow()) - self.signed_at).total_seconds()

    def waited(self, now: datetime | None = None) -> float | None:
        """The longest the oldest waiting event can have waited, in seconds
        (see the module docstring); None when nothing waits."""
        if not self.waiting:
            return None
        known = [t for t in (self.signed_at, self.first_waiting_at) if t is not None]
        if not known:  # the oldest waiting event is missing: it has waited forever
            return float("inf")
        return max(((now or utcnow()) - max(known)).total_seconds(), 0.0)

    def lagging(self, interval: float, now: datetime | None = None) -> bool:
        """Whether the oldest waiting event has waited more than LAG_FACTOR intervals."""
        waited = self.waited(now)
        return waited is not None and waited > LAG_FACTOR * interval


def seal_interval(config: Mapping[str, Any]) -> float:
    """LEDGER_SEAL_INTERVAL in seconds; ValueError when it is not a positive number."""
    try:
        interval = float(config.get("LEDGER_SEAL_INTERVAL") or 0)
    except (TypeError, ValueError):
        interval = 0.0
    if not interval > 0:
        raise ValueError("LEDGER_SEAL_INTERVAL must be a positive number of seconds")
    return interval


def seal_state() -> SealState:
    """The sealing state now (SEAL_STATE in the session's transaction)."""
    return SealState.of(db.session.execute(SEAL_STATE).one())
