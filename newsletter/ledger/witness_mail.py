"""Witnesses outside the database: the daily checkpoint mail.

When LEDGER_WITNESS_MAILTO is set, the latest checkpoint is mailed to that
address at most once a UTC day: the worker's seal step queues an outbox row
(kind ``ledger_checkpoint``, recipient ``address``) in the same transaction
that sets the checkpoint's ``mailed_on``, under the tree row's lock, so
several workers queue one mail a day between them; the outbox loop sends it
like every other mail (rendered by privacy/ledger_witness_mail.py).

A day is mailed only when there is a checkpoint that was never mailed: a log
that did not grow since the last mail has nothing new to witness, so a quiet
day sends nothing, and the next seal after it is mailed the same day. A
checkpoint sealed on a day that was mailed already waits for the next day.

The seal loop asks every second. ``mailed_on`` has no index (one checkpoint
per seal, thousands a day), so each process remembers the last day it found
mailed and looks at the table again only on the next day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from flask import current_app
from sqlalchemy import func, select

from ..extensions import db
from ..models import LedgerCheckpoint, LedgerTree, OutboxKind, OutboxMessage, utcnow

# current_app.extensions key: the last UTC day this process found mailed.
MAILED_DAY = "ledger_witness_mailed_day"


@dataclass(frozen=True)
class WitnessMail:
    """The witness mail queued: its outbox row, the checkpoint's size and the day."""

    outbox_id: int
    size: int
    day: date


def today() -> date:
    """The current UTC day (the clock the daily rule reads)."""
    return utcnow().date()


def witness_address() -> str | None:
    """LEDGER_WITNESS_MAILTO, or None when it is unset or blank."""
    address = str(current_app.config.get("LEDGER_WITNESS_MAILTO") or "").strip()
    return address or None


def witness_mail_due(day: date | None = None) -> bool:
    """Whether a witness mail should be queued now: an address is set, no
    checkpoint was mailed on ``day`` (today) and the latest was never mailed.
    Reads in the session's transaction and takes no lock."""
    if witness_address() is None:
        return False
    day = day or today()
    if _known_mailed() == day:
        return False
    latest = db.session.execute(
        select(LedgerCheckpoint.mailed_on).order_by(LedgerCheckpoint.size.desc()).limit(1)
    ).first()
    if latest is None or latest.mailed_on is not None:
        return False
    return not _mailed_on(day)


def queue_witness_mail(day: date | None = None) -> WitnessMail | None:
    """Queue the latest checkpoint's mail to LEDGER_WITNESS_MAILTO when it is due
    (see witness_mail_due) and commit; returns what was queued, or None.

    The tree row's lock (the one every seal takes) makes the check and the
    write one step across workers: a second worker waits, then finds the
    day mailed.
    """
    address = witness_address()
    if address is None:
        return None
    day = day or today()
    try:
        locked = db.session.scalar(
            select(LedgerTree.id).where(LedgerTree.id == 1).with_for_update()
        )
        latest = db.session.scalar(
            select(LedgerCheckpoint).order_by(LedgerCheckpoint.size.desc()).limit(1)
        )
        if locked is None or latest is None or latest.mailed_on is not None or _mailed_on(day):
            db.session.rollback()
            return None
        latest.mailed_on = day
        row = OutboxMessage(
            kind=OutboxKind.LEDGER_CHECKPOINT,
            address=address,
            payload={"size": latest.size},
        )
        db.session.add(row)
        db.session.flush()
        queued = WitnessMail(row.id, latest.size, day)
        db.session.commit()
        current_app.extensions[MAILED_DAY] = day
    except BaseException:
        db.session.rollback()
        raise
    return queued


def _mailed_on(day: date) -> bool:
    """Whether a checkpoint was mailed on ``day`` (remembered by this process
    once found: a mailed day stays mailed)."""
    found = bool(
        db.session.scalar(
            select(func.count())
            .select_from(LedgerCheckpoint)
            .where(LedgerCheckpoint.mailed_on == day)
        )
    )
    if found:
        current_app.extensions[MAILED_DAY] = day
    return found


def _known_mailed() -> date | None:
    """The last day this process found mailed."""
    known = current_app.extensions.get(MAILED_DAY)
    return known if isinstance(known, date) else None
