"""Leases on rows of work: claim, renew, release and settle, for every worker loop.

The outbox, campaign deliveries and CSV import jobs are queues of rows that a
worker takes for a while and then settles; all three take and keep them here.

- A claim is one statement: ``UPDATE t SET lease_until = :until, leased_by =
  :owner WHERE id IN (SELECT id ... FOR UPDATE SKIP LOCKED) RETURNING ...``.
  On PostgreSQL SKIP LOCKED lets concurrent workers take disjoint rows without
  waiting for each other; on SQLite every transaction begins IMMEDIATE
  (database.py), so claims take turns and the second sees the first's lease.
  A row is free when it has no lease or its lease has run out, so a crashed
  worker's rows come back by themselves. The caller commits right after: no
  transaction stays open during the slow work (SMTP, checking a file).
- The lease's expiry is also its token. Every row of one claim gets the same
  one, and renew, release and a fenced settle touch only rows that still carry
  this owner's token, and return how many they touched: a worker whose lease ran
  out and was taken over finds its rows gone instead of writing over another's.
- A worker renews when half its lease has passed (``Lease.due``), so a batch
  slower than its lease keeps its rows.
- A claim reports rows whose earlier lease ran out (``Lease.takeovers``): the
  worker that held them may have sent some of them without recording it.
- A sender records its work through a ``Fence`` (newsletter/fence.py): what it sent
  is marked chunk by chunk, fenced by the token, and it stops at the first
  chunk that is no longer its own.
- Error text is cut to ERROR_LENGTH, the shortest error column of the three.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, literal, null, or_, update
from sqlalchemy.orm import QueryableAttribute

from .database import among, is_postgresql
from .extensions import db
from .models import utcnow

# The longest error text kept on a row (deliveries.last_error is VARCHAR(300)).
ERROR_LENGTH = 300


def worker_id() -> str:
    """A name for this worker thread in lease columns and logs: host, process, thread."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 10000}"


class Leasable:
    """The lease columns of a table of work rows: its id, lease expiry (the
    token), and where it has them, the owner's name and the last error."""

    def __init__(
        self,
        id: QueryableAttribute[int],
        lease_until: QueryableAttribute[datetime | None],
        leased_by: QueryableAttribute[str | None] | None = None,
        last_error: QueryableAttribute[str | None] | None = None,
    ) -> None:
        # Plain attributes, not dataclass fields: a type checker would read an
        # ORM attribute declared on the class as the column's value.
        self.id = id
        self.lease_until = lease_until
        self.leased_by = leased_by
        self.last_error = last_error

    @property
    def model(self) -> Any:
        """The mapped class the columns belong to."""
        return self.id.class_


@dataclass(frozen=True)
class Takeover:
    """Rows a claim took from a lease that had run out: whose it was (owner and
    token) and the rows' ids."""

    owner: str | None
    until: datetime
    ids: tuple[int, ...]


@dataclass
class Lease:
    """What one worker holds: its name, the lease's length, and its token (the
    expiry stored on every row it holds). ``renew`` moves the token on.
    ``takeovers`` lists what its claims took from leases that had run out."""

    owner: str | None
    seconds: float
    until: datetime
    renew_at: float = field(default=0.0)  # time.monotonic() when half has passed
    takeovers: list[Takeover] = field(default_factory=list)

    @classmethod
    def start(cls, owner: str | None, seconds: float) -> Lease:
        """A new lease of ``seconds`` from now, to claim rows with. Renewal falls
        due after half of it, counted from before the claim, to be safe."""
        return cls(
            owner, seconds, utcnow() + timedelta(seconds=seconds), time.monotonic() + seconds / 2
        )

    def due(self) -> bool:
        """Whether half the lease has passed since it was taken or last renewed."""
        return time.monotonic() >= self.renew_at


def error_text(error: str) -> str:
    """Error text as stored on a row: at most ERROR_LENGTH characters."""
    return error[:ERROR_LENGTH]


def free(table: Leasable, now: datetime) -> ColumnElement[bool]:
    """Rows nobody holds: no lease, or one that has run out."""
    return or_(table.lease_until.is_(None), table.lease_until < now)


def skip_locked(candidates: Select[Any], table: Leasable) -> Select[Any]:
    """Lock the candidate rows as they are read, skipping rows another
    transaction holds (PostgreSQL); SQLite's single writer needs nothing."""
    if is_postgresql():
        return candidates.with_for_update(skip_locked=True, of=table.model)
    return candidates


def claim(
    table: Leasable,
    candidates: Select[Any],
    lease: Lease,
    returning: Sequence[QueryableAttribute[Any]] = (),
    **values: object,
) -> list[tuple[Any, ...]]:
    """Lease the rows ``candidates`` (a SELECT of ids, already limited to the
    due and ``free`` ones) to ``lease`` and set ``values`` on them, in one
    round trip; return their ``returning`` columns (the id by default).

    Each row's lease as it was before is read with it: rows whose lease had
    run out (a token is still there; release and settle clear it) are added
    to ``lease.takeovers``, grouped by the lease they came from. On PostgreSQL
    the statement is ``UPDATE ... FROM (candidates ... FOR UPDATE SKIP LOCKED)
    RETURNING``, whose FROM row still holds the old lease. SQLite's RETURNING
    cannot name a FROM table, so there the candidates are read first: its one
    writer at a time (BEGIN IMMEDIATE) makes the two statements one step.
    The caller commits. Candidates locked by another claim are skipped.
    """
    leased: dict[str, object] = {table.lease_until.key: lease.until}
    previous: list[Any] = [table.lease_until]
    if table.leased_by is not None:
        leased[table.leased_by.key] = lease.owner
        previous.append(table.leased_by)
    wanted = tuple(returning or (table.id,))
    statement = (
        update(table.model).values(**leased, **values).execution_options(synchronize_session=False)
    )
    before: dict[int, tuple[Any, ...]] = {}
    if is_postgresql():
        picked = skip_locked(candidates.add_columns(*previous), table).subquery()
        statement = statement.where(table.id == picked.c[table.id.key]).returning(
            *wanted, table.id, *(picked.c[column.key] for column in previous)
        )
    else:
        before = {
            row[0]: tuple(row[1:]) for row in db.session.execute(candidates.add_columns(*previous))
        }
        statement = statement.where(among(table.id, before)).returning(*wanted, table.id)
    rows: list[tuple[Any, ...]] = []
    lost: dict[tuple[str | None, datetime], list[int]] = {}
    for row in db.session.execute(statement):
        rows.append(tuple(row[: len(wanted)]))
        row_id, *old = row[len(wanted) :]
        until, *owner = old or before[row_id]
        if until is not None:
            lost.setdefault((owner[0] if owner else None, until), []).append(row_id)
    lease.takeovers += (Takeover(o, u, tuple(sorted(ids))) for (o, u), ids in lost.items())
    return rows


def held(table: Leasable, ids: Collection[int], lease: Lease) -> ColumnElement[bool]:
    """Rows among ``ids`` that ``lease`` still holds: they carry its token (and
    its owner's name, where the table records one)."""
    condition = and_(among(table.id, ids), table.lease_until == lease.until)
    if table.leased_by is not None and lease.owner is not None:
        condition = and_(condition, table.leased_by == lease.owner)
    return condition


def renew(table: Leasable, ids: Collection[int], lease: Lease, **values: object) -> int:
    """Extend ``lease`` on those of ``ids`` it still holds, setting ``values`` in
    the same statement; return how many rows that was. Rows settled or taken
    over meanwhile are not touched. The caller commits."""
    until = utcnow() + timedelta(seconds=lease.seconds)
    touched = _update(table, held(table, ids, lease), {table.lease_until.key: until, **values})
    if touched:
        lease.until = until
    lease.renew_at = time.monotonic() + lease.seconds / 2
    return touched


def release(table: Leasable, ids: Collection[int], lease: Lease) -> int:
    """Hand back those of ``ids`` that ``lease`` still holds, untouched otherwise,
    for the next claim; return how many. The caller commits."""
    if not ids:
        return 0
    return _update(table, held(table, ids, lease), {table.lease_until.key: None})


def settle(
    table: Leasable,
    ids: Collection[int],
    *,
    lease: Lease | None = None,
    error: str | None = None,
    **values: object,
) -> int:
    """Record an outcome on rows and end their lease: set ``values`` and, given
    ``error``, the row's error text (cut to ERROR_LENGTH). With ``lease`` only
    rows it still holds are touched (fenced). Returns how many; the caller commits."""
    changes: dict[str, object] = {table.lease_until.key: None, **values}
    if error is not None:
        assert table.last_error is not None, "this table keeps no error text"
        changes[table.last_error.key] = error_text(error)
    where = held(table, ids, lease) if lease is not None else among(table.id, ids)
    return _update(table, where, changes)


def record(
    table: Leasable,
    done: Collection[int],
    lease: Lease,
    rest: Collection[int] = (),
    **done_values: object,
) -> set[int]:
    """In one statement, settle ``done`` (set ``done_values``, end their lease)
    and, given ``rest``, extend ``lease`` on those rows; touch only rows the
    lease still holds and return the ids touched. The token moves on when a
    row of ``rest`` was touched. The caller commits."""
    ids = [*done, *rest]
    if not ids:
        return set()
    until = utcnow() + timedelta(seconds=lease.seconds)
    changes: dict[str, object] = {table.lease_until.key: None, **done_values}
    if rest and not done:
        changes = {table.lease_until.key: until}
    elif rest:
        # Rows of ``done`` get their outcome, the others keep theirs and the new token.
        finished = among(table.id, done)
        columns = table.model.__table__.c
        changes = {
            key: case((finished, literal(value, columns[key].type)), else_=columns[key])
            for key, value in done_values.items()
        }
        token = literal(until, table.lease_until.type)
        changes[table.lease_until.key] = case((finished, null()), else_=token)
    statement = (
        update(table.model)
        .where(held(table, ids, lease))
        .values(**changes)
        .returning(table.id)
        .execution_options(synchronize_session=False)
    )
    touched = set(db.session.scalars(statement))
    if rest and not touched.isdisjoint(rest):
        lease.until = until
        lease.renew_at = time.monotonic() + lease.seconds / 2
    return touched


def _update(table: Leasable, where: ColumnElement[bool], values: dict[str, object]) -> int:
    """One UPDATE of the table's rows matching ``where``; how many it changed."""
    result = db.session.execute(
        update(table.model)
        .where(where)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
