"""Witnesses outside the database: the checkpoint log file.

Every checkpoint is appended to LEDGER_CHECKPOINT_LOG (when set) by the seal
that signs it, under the tree lock, so appends never interleave. A checkpoint
that could not be written (a full or missing disk) stays marked unlogged and
is written, in size order, by the next seal. Writing it before the seal
commits is safe: a rolled-back seal is redone from the same events, so a
checkpoint in the file is always one the tree extends.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from flask import current_app
from sqlalchemy import select

from ..extensions import db
from ..models import LedgerCheckpoint, utcnow

log = logging.getLogger(__name__)


def log_checkpoints() -> int:
    """Append the checkpoints not yet in LEDGER_CHECKPOINT_LOG to it, oldest
    first, each note followed by an empty line; mark them logged. Returns how
    many were written (0 when no file is set or it cannot be written)."""
    path = current_app.config.get("LEDGER_CHECKPOINT_LOG")
    if not path:
        return 0
    rows = db.session.scalars(
        select(LedgerCheckpoint)
        .where(LedgerCheckpoint.logged_at.is_(None))
        .order_by(LedgerCheckpoint.size)
    ).all()
    if not rows:
        return 0
    try:
        _append(Path(path), "".join(row.note + "\n" for row in rows))
    except OSError as exc:
        log.error("ledger: cannot append checkpoints to %s: %s", path, exc.strerror or exc)
        return 0
    now = utcnow()
    for row in rows:
        row.logged_at = now
    return len(rows)


def _append(path: Path, text: str) -> None:
    """Append ``text`` and wait until it is on disk; a write that fails part
    way (a full disk) is cut back off, so the file holds only whole notes."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        rest = memoryview(text.encode())
        try:
            while rest:
                rest = rest[os.write(fd, rest) :]
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)
