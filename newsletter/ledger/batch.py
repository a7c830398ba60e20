"""Appending events as plain column values, several under one lock of the head.

``append.append_pending`` builds one mapped object per event and lets the unit
of work insert it: fine for a confirmation, too slow for 100,000 imported
rows, and a large share of a signup's cost. Here the values that do not depend
on the event's place (the keyed address digest, the salt and commitment) are
computed before the lock; under it each row only gets its ``seq`` and time,
and the rows go to the database in one statement (COPY for many, one INSERT
for a few). ``PendingEvent.columns`` makes the row for both paths, so sealing
and ``newsletter ledger verify`` treat these events exactly like any other.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import insert

from ..bulk import bulk_insert
from ..extensions import db
from ..models import ConsentEvent, utcnow
from .append import PolicyInForce, lock_head, move_head, policy_in_force_id
from .keys import ledger_keys
from .pending import PendingEvent

# Every column but the key, so that a column added later is never missed.
COLUMNS = [c.key for c in ConsentEvent.__table__.columns if c.key != "id"]
# Up to this many rows, one multi-row INSERT costs less than starting a COPY.
COPY_FROM = 50


def append_events(events: Sequence[PendingEvent], policy: PolicyInForce | None = None) -> None:
    """Chain and insert ``events`` in order, in the caller's transaction.

    Each event becomes a row of plain values (every column, None unless set):
    building mapped objects would cost more than the hashing. ``policy`` is
    the privacy policy in force as the caller already looked it up; it is
    looked up here when not given or when the day has changed. The head is
    locked (``FOR UPDATE``; on SQLite the write lock is held since BEGIN
    IMMEDIATE) from here to the caller's commit, so do this last. The time is
    read under the lock, as ``append_pending`` does; an event with ``recorded``
    keeps the time and policy recorded with it instead. ``seq`` is the order
    of appending, so it is not time order: a signup waits in the intake.
    """
    if not events:
        return
    key = ledger_keys()[0]
    if policy is None:  # looked up before the lock, as append_pending does
        today = utcnow().date()
        policy = PolicyInForce(today, policy_in_force_id(today))
    rows = [{**dict.fromkeys(COLUMNS), **event.columns(key)} for event in events]
    head = lock_head()
    now = utcnow()
    policy_id = policy.version_on(now.date())
    seq = head
    for event, row in zip(events, rows, strict=True):
        seq += 1
        at, policy_of = now, policy_id
        if event.recorded is not None:
            at, policy_of = event.recorded.at, event.recorded.policy_version_id
        row.update(seq=seq, occurred_at=at, policy_version_id=policy_of)
    if len(rows) >= COPY_FROM:
        bulk_insert(ConsentEvent.__table__, rows)
    else:
        db.session.execute(insert(ConsentEvent.__table__), rows)
    move_head(seq)
