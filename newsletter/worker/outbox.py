"""The outbox loop: claim due mail under a lease, send it, record the outcome.

Delivery is at-least-once: a row is marked sent right after the server took
it, so only a crash between those two steps can send a mail twice. A crashed
worker's claims expire after OUTBOX_LEASE_SECONDS and another worker takes
them over. No transaction is open while talking to the SMTP server (on SQLite
an open transaction would hold the single write lock).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass
from datetime import timedelta

from flask import Flask, current_app
from sqlalchemy import or_, select, update

from ..database import is_postgresql
from ..extensions import db
from ..mail.headers import UnsafeHeader
from ..mail.message import OutgoingMail
from ..mail.render import NothingToSend
from ..mail.retry import next_attempt
from ..mail.transport import PermanentFailure, ServerUnavailable, TemporaryFailure, open_transport
from ..models import OutboxMessage, OutboxStatus, utcnow
from .dispatch import render_outbox_message

log = logging.getLogger(__name__)


def worker_id() -> str:
    """A name for this worker process in lease columns and logs."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 10000}"


@dataclass
class BatchResult:
    """Counts for one batch."""

    sent: int = 0
    retried: int = 0
    failed: int = 0
    skipped: int = 0

    @property
    def handled(self) -> int:
        """How many rows the batch took care of."""
        return self.sent + self.retried + self.failed + self.skipped


def claim_batch(owner: str, size: int) -> list[int]:
    """Lease up to ``size`` due rows to ``owner`` and commit; return their ids.

    On PostgreSQL, ``FOR UPDATE SKIP LOCKED`` lets concurrent workers claim
    disjoint batches without waiting on each other. SQLite serialises writers
    (BEGIN IMMEDIATE), which gives the same exclusivity.
    """
    now = utcnow()
    query = (
        select(OutboxMessage.id)
        .where(
            OutboxMessage.status == OutboxStatus.QUEUED,
            OutboxMessage.next_attempt_at <= now,
            or_(OutboxMessage.lease_until.is_(None), OutboxMessage.lease_until < now),
        )
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
        .limit(size)
    )
    if is_postgresql():
        query = query.with_for_update(skip_locked=True)
    ids = list(db.session.scalars(query))
    if ids:
        lease = now + timedelta(seconds=current_app.config["OUTBOX_LEASE_SECONDS"])
        db.session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(ids))
            .values(lease_until=lease, leased_by=owner)
        )
    db.session.commit()
    return ids


def process_batch(app: Flask, owner: str | None = None) -> BatchResult:
    """Claim one batch, render it, send it over one connection, record outcomes."""
    owner = owner or worker_id()
    result = BatchResult()
    ids = claim_batch(owner, app.config["OUTBOX_BATCH_SIZE"])
    if not ids:
        return result
    rendered: list[tuple[int, OutgoingMail]] = []
    for row_id in ids:
        row = db.session.get(OutboxMessage, row_id)
        if row is None:  # erased meanwhile
            continue
        try:
            rendered.append((row_id, render_outbox_message(row)))
        except NothingToSend as reason:
            _finish(row_id, OutboxStatus.SKIPPED, str(reason))
            result.skipped += 1
        except UnsafeHeader as exc:
            # Retrying cannot make an address or a header safe to write.
            db.session.rollback()
            _finish(row_id, OutboxStatus.FAILED, f"cannot write the mail's header: {exc}")
            result.failed += 1
        except Exception as exc:
            # Bad data or a bug in one mail must not hold up the rest of the
            # batch: this row backs off and, if it keeps failing, ends failed.
            log.exception("outbox #%d: could not render", row_id)
            db.session.rollback()
            _retry(row_id, f"render error: {exc!r}")
            result.retried += 1
    db.session.commit()  # end the read transaction before any network I/O
    if not rendered:
        return result

    try:
        with open_transport(app) as transport:
            for position, (row_id, message) in enumerate(rendered):
                try:
                    transport.send(message)
                except PermanentFailure as exc:
                    _finish(row_id, OutboxStatus.FAILED, str(exc))
                    result.failed += 1
                except TemporaryFailure as exc:
                    # The connection may be unusable: retry this row and release the rest.
                    _retry(row_id, str(exc), outage=isinstance(exc, ServerUnavailable))
                    _release([r for r, _ in rendered[position + 1 :]])
                    result.retried += 1
                    break
                except Exception as exc:
                    # Unexpected: back off on this row only (it fails for good after
                    # OUTBOX_MAX_ATTEMPTS) and, as the connection's state is unknown,
                    # hand the rest back for the next batch on a fresh connection.
                    log.exception("outbox #%d: unexpected error while sending", row_id)
                    _retry(row_id, f"unexpected error: {exc!r}")
                    _release([r for r, _ in rendered[position + 1 :]])
                    result.retried += 1
                    break
                else:
                    _finish(row_id, OutboxStatus.SENT)
                    result.sent += 1
    except TemporaryFailure as exc:  # could not connect at all
        for row_id, _ in rendered:
            _retry(row_id, str(exc), outage=isinstance(exc, ServerUnavailable))
        result.retried += len(rendered)
    log.info(
        "outbox batch: %d sent, %d retried, %d failed, %d skipped",
        result.sent,
        result.retried,
        result.failed,
        result.skipped,
    )
    return result


def _finish(row_id: int, status: OutboxStatus, error: str | None = None) -> None:
    """Record a final outcome and release the lease."""
    values: dict[str, object] = {"status": status, "lease_until": None, "last_error": error}
    if status == OutboxStatus.SENT:
        values["sent_at"] = utcnow()
    db.session.execute(update(OutboxMessage).where(OutboxMessage.id == row_id).values(**values))
    db.session.commit()


def _retry(row_id: int, error: str, *, outage: bool = False) -> None:
    """Schedule another attempt (see mail.retry), or give up after the limit."""
    row = db.session.get(OutboxMessage, row_id)
    if row is None:
        return
    config = current_app.config
    row.attempts += 1
    row.last_error = error[:500]
    row.lease_until = None
    when = next_attempt(
        row.attempts,
        base_seconds=config["OUTBOX_RETRY_BASE_SECONDS"],
        max_attempts=config["OUTBOX_MAX_ATTEMPTS"],
        outage=outage,
    )
    if when is None:
        row.status = OutboxStatus.FAILED
    else:
        row.next_attempt_at = when
    db.session.commit()
    log.warning("outbox #%d: attempt %d failed: %s", row_id, row.attempts, error)


def _release(ids: list[int]) -> None:
    """Give claimed rows back untouched, for the next batch."""
    if ids:
        db.session.execute(
            update(OutboxMessage).where(OutboxMessage.id.in_(ids)).values(lease_until=None)
        )
        db.session.commit()
