"""Sending under a lease: record what was sent chunk by chunk, and stop the moment
the lease is no longer provably this worker's.

A sender (campaign deliveries, the outbox) asks ``Fence.check`` before each
message. A chunk is due once ``chunk`` messages were sent and not yet recorded,
once ``seconds`` have passed since the last record with something to record,
or once half the lease has passed. Then one statement (lease.record) marks the
sent rows and, when half the lease has passed, extends the lease on the rows
still to send; it touches only rows that still carry this worker's token and
owner. If it touches fewer rows than it should (another worker took them over),
or fails (database unreachable, a statement timeout), or the lease ran out by
the worker's own clock before the next message, the batch stops at once: the
sender closes its SMTP connection, and a warning names the batch and how many
mails were sent but not recorded. Those, at most one chunk, are the only mails
another worker can send again.

Between two records, rows still to send need no statement to stay this
worker's: a claim takes only rows whose lease has run out, and the lease is
renewed (fenced) whenever half of it has passed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from .extensions import db
from .lease import Leasable, Lease, record, release
from .models import utcnow

log = logging.getLogger(__name__)


@dataclass
class BatchCounts:
    """What a fenced send loop did with one batch (outbox and campaign deliveries alike)."""

    sent: int = 0
    retried: int = 0
    failed: int = 0
    skipped: int = 0

    @property
    def handled(self) -> int:
        """How many rows the batch took care of."""
        return self.sent + self.retried + self.failed + self.skipped


class Fence:
    """One batch's record of what was sent, kept under its lease."""

    def __init__(
        self,
        table: Leasable,
        lease: Lease,
        *,
        chunk: int,
        seconds: float,
        sent_values: Callable[[], dict[str, object]],
        batch: str,
    ) -> None:
        self.table = table
        self.lease = lease
        self.chunk = max(1, int(chunk))
        self.seconds = float(seconds)
        self.sent_values = sent_values  # what marks a row sent, made at record time
        self.batch = batch  # names the batch in the warning (campaign, rows)
        self.pending: list[int] = []  # sent, not recorded yet
        self.recorded = 0
        self.unrecorded = 0  # sent and, the lease lost, never recorded by this worker
        self.lost = False
        self._last = time.monotonic()

    def sent(self, row_id: int) -> None:
        """The server accepted the mail of this row; it is recorded with the chunk."""
        self.pending.append(row_id)

    def due(self) -> bool:
        """Whether a record is due: a full chunk, a second's worth, or half the lease."""
        if len(self.pending) >= self.chunk or self.lease.due():
            return True
        return bool(self.pending) and time.monotonic() - self._last >= self.seconds

    def check(self, rest: Sequence[int]) -> bool:
        """Before the next message: whether this worker may send it. ``rest`` are
        the rows not yet tried, the next one first. Records a due chunk; on a
        lost lease records what it still can, releases the rest and warns."""
        if self.lost:
            return False
        if utcnow() >= self.lease.until:
            self.flush()  # what is still its own, it records
            return self._lose(rest, "the lease ran out before the next message")
        if not self.due():
            return True
        return self.flush(rest)

    def flush(self, rest: Sequence[int] = ()) -> bool:
        """Record the sent rows, and extend the lease on ``rest`` when half of it
        has passed, in one statement; commit. False, with the warning, when the
        statement failed or found rows no longer this worker's."""
        if self.lost:
            return False
        extend = list(rest) if rest and self.lease.due() else []
        if not self.pending and not extend:
            return True
        try:
            touched = record(self.table, self.pending, self.lease, extend, **self.sent_values())
            db.session.commit()
        except SQLAlchemyError as exc:
            db.session.rollback()
            return self._lose(rest, f"recording failed: {type(exc).__name__}: {exc}", broken=True)
        self._last = time.monotonic()
        recorded = [row_id for row_id in self.pending if row_id in touched]
        self.recorded += len(recorded)
        missing = len(self.pending) - len(recorded) + len(set(extend) - touched)
        self.pending = [row_id for row_id in self.pending if row_id not in touched]
        if missing:
            return self._lose(rest, f"{missing} rows were no longer this worker's")
        return True

    def _lose(self, rest: Sequence[int], reason: str, *, broken: bool = False) -> bool:
        """Stop: count what was sent and not recorded, hand back the rows still
        held (not after a database error: they expire), log the warning."""
        self.lost = True
        self.unrecorded, self.pending = len(self.pending), []
        if rest and not broken:
            try:
                release(self.table, rest, self.lease)
                db.session.commit()
            except SQLAlchemyError:
                db.session.rollback()
        log.warning(
            "%s: lease lost (%s); token %s, owner %s: stopped sending, "
            "%d sent but not recorded, %d not sent",
            self.batch,
            reason,
            self.lease.until.isoformat(),
            self.lease.owner,
            self.unrecorded,
            len(rest),
        )
        return False
