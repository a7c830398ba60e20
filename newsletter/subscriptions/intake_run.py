"""The worker side of a public signup: take intake rows and do what they ask.

Each row is processed exactly once:

- Rows are claimed with the shared lease helper (``lease.claim``), committed
  at once, and then worked on in one transaction per batch that begins by
  deleting them, fenced by the lease's token (``_take``). The DELETE locks the
  rows until the commit, and the work commits or rolls back with it: a worker
  killed before its commit leaves the rows to be claimed again once the lease
  runs out, and a worker whose lease was taken over deletes nothing and does
  nothing.
- A batch that raises is rolled back and its rows are done one at a time; a
  row that still raises is marked failed with the reason and never blocks the
  rows behind it. A database that cannot be reached is not the row's fault:
  that error ends the round and the rows are claimed again later.
- A row claimed before and not done (its worker died, or its batch) is
  claimed again alone, so a row that kills its worker takes down only itself;
  claimed INTAKE_MAX_ATTEMPTS times, it is marked failed instead of being
  claimed again.

What a row asks for is what a signup did before it was answered
(``signup.apply_signups``), with the request's time and evidence.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from flask import current_app
from sqlalchemy import Row, Select, delete, select
from sqlalchemy.exc import DBAPIError, OperationalError

from ..extensions import db
from ..lease import Leasable, Lease, claim, free, release, settle
from ..models import SignupIntake, utcnow
from ..transaction import transactional, unit_of_work
from .signup import apply_signups, refused

log = logging.getLogger(__name__)

INTAKE = Leasable(
    SignupIntake.id, SignupIntake.lease_until, SignupIntake.leased_by, SignupIntake.last_error
)


def process_intake(owner: str | None = None, limit: int | None = None) -> int:
    """Claim waiting rows (``_claim``), process them and return how many rows
    were handled (done, failed or given up)."""
    config = current_app.config
    lease = Lease.start(owner, float(config["INTAKE_LEASE_SECONDS"]))
    claimed = _claim(lease, limit or int(config["INTAKE_BATCH_SIZE"]))
    for takeover in lease.takeovers:
        log.warning(
            "intake: rows %s were claimed again after %s's lease ran out",
            list(takeover.ids),
            takeover.owner,
        )
    if not claimed:
        return 0
    limit_attempts = int(config["INTAKE_MAX_ATTEMPTS"])
    # ``attempts`` as returned counts this claim.
    given_up = sorted(row_id for row_id, attempts in claimed if attempts > limit_attempts)
    if given_up:
        _fail(given_up, lease, f"given up after {limit_attempts} attempts")
    ids = sorted(row_id for row_id, attempts in claimed if attempts <= limit_attempts)
    try:
        with unit_of_work():
            _process(ids, lease)
    except _UNREACHABLE:
        _hand_back(ids, lease)
        raise
    except Exception:
        log.exception("intake: a batch of %d failed; doing its rows one at a time", len(ids))
        for position, row_id in enumerate(ids):
            try:
                _process_alone(row_id, lease)
            except _UNREACHABLE:
                _hand_back(ids[position:], lease)
                raise
    return len(claimed)


def _claim(lease: Lease, limit: int) -> list[tuple[int, int]]:
    """Lease rows to work on and commit: one row that was claimed before and
    not done (a worker died on it, or its batch), alone, oldest first; else up
    to ``limit`` rows never claimed. A row that kills its worker thus takes
    down only itself once it is retried, and is given up after
    INTAKE_MAX_ATTEMPTS without its batch mates. Returns (id, attempts)."""
    with unit_of_work():
        waiting = _claimable()
        for candidates in (
            waiting.where(SignupIntake.attempts > 0).order_by(SignupIntake.id).limit(1),
            waiting.where(SignupIntake.attempts == 0).order_by(SignupIntake.id).limit(limit),
        ):
            claimed = claim(
                INTAKE,
                candidates,
                lease,
                returning=(SignupIntake.id, SignupIntake.attempts),
                attempts=SignupIntake.attempts + 1,
            )
            if claimed:
                return [(int(row_id), int(attempts)) for row_id, attempts in claimed]
    return []


def _claimable() -> Select[Any]:
    """The ids of rows a worker may claim now: not failed, and no lease or one
    that has run out."""
    return select(SignupIntake.id).where(SignupIntake.failed_at.is_(None), free(INTAKE, utcnow()))


@transactional
def intake_due() -> bool:
    """Whether a row waits that a worker may claim now; one short read."""
    return db.session.scalar(_claimable().limit(1)) is not None


def _hand_back(ids: Sequence[int], lease: Lease) -> None:
    """Release rows after an error that is not theirs (a lost connection, a
    deadlock, a lock timeout), so that they need not wait for the lease to run
    out; when the database cannot be reached either, the lease does that."""
    try:
        with unit_of_work():
            release(INTAKE, ids, lease)
    except Exception:
        log.warning("intake: could not hand back rows %s; their lease will run out", list(ids))


# Errors that say nothing about the row: the database is gone or refused the
# connection, a deadlock, a lock or statement timeout. They end the round; the
# rows are handed back and claimed again.
_UNREACHABLE = (OperationalError,)


def _process_alone(row_id: int, lease: Lease) -> None:
    """Process one row in its own transaction; mark it failed when it raises."""
    try:
        with unit_of_work():
            _process([row_id], lease)
    except _UNREACHABLE:
        raise
    except Exception as exc:
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            raise
        log.exception("intake: row %d failed", row_id)
        _fail([row_id], lease, f"{type(exc).__name__}: {exc}")


def _process(ids: Sequence[int], lease: Lease) -> None:
    """Take the rows ``lease`` still holds, refuse those asking for a list that
    is gone, and apply the rest, in the caller's transaction."""
    rows = _take(ids, lease)
    if not rows:
        return
    reasons = refused(rows)
    for row in rows:
        if row.id in reasons:
            _keep_failed(row, reasons[row.id])
    apply_signups([row for row in rows if row.id not in reasons])


def _take(ids: Sequence[int], lease: Lease) -> list[Row[Any]]:
    """Delete the rows among ``ids`` that ``lease`` still holds and return them.

    ``DELETE ... RETURNING`` fenced by the lease's token: rows another worker
    took over are not touched, and the rows returned stay locked until this
    transaction ends, with or without them.
    """
    statement = (
        delete(SignupIntake)
        .where(SignupIntake.id.in_(list(ids)), SignupIntake.lease_until == lease.until)
        .returning(*SignupIntake.__table__.columns)
        .execution_options(synchronize_session=False)
    )
    if lease.owner is not None:
        statement = statement.where(SignupIntake.leased_by == lease.owner)
    return sorted(db.session.execute(statement), key=lambda row: int(row.id))


def _keep_failed(row: Row[Any], reason: str) -> None:
    """Put a taken row back as failed with ``reason``, in the caller's transaction."""
    values = dict(row._mapping)
    values.update(lease_until=None, failed_at=utcnow(), last_error=reason[:300])
    db.session.execute(SignupIntake.__table__.insert().values(**values))
    log.warning("intake: row %d failed: %s", row.id, reason)


def _fail(ids: Sequence[int], lease: Lease, reason: str) -> None:
    """Mark rows ``lease`` still holds as failed with ``reason``, in a transaction of their own."""
    with unit_of_work():
        settle(INTAKE, ids, lease=lease, error=reason, failed_at=utcnow())
    log.warning("intake: rows %s failed: %s", list(ids), reason)
