"""The outbox loop: claim due mail under a lease, send it, record the outcome.

Delivery is at-least-once: a row is marked sent right after the server took
it (every OUTBOX_FENCE_CHUNK mails, one by default), in a statement fenced by
the lease token (newsletter/fence.py), so only a crash between those two steps
can send a mail twice. A crashed worker's claims expire after
OUTBOX_LEASE_SECONDS and another worker takes them over, which it logs; a live
worker renews its lease while it sends, so a batch slower than the lease is
not taken over, and a worker whose rows were taken over stops at once. No
transaction is open while talking to the SMTP server (on SQLite an open
transaction would hold the single write lock).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app
from sqlalchemy import select

from ..extensions import db
from ..fence import BatchCounts, Fence
from ..lease import Leasable, Lease, claim, free, release, settle, worker_id
from ..mail.headers import UnsafeHeader
from ..mail.message import OutgoingMail
from ..mail.render import NothingToSend, returning_to
from ..mail.retry import next_attempt
from ..mail.transport import PermanentFailure, ServerUnavailable, TemporaryFailure, open_transport
from ..models import OutboxMessage, OutboxStatus, utcnow
from .dispatch import render_outbox_message

log = logging.getLogger(__name__)

OUTBOX = Leasable(
    OutboxMessage.id, OutboxMessage.lease_until, OutboxMessage.leased_by, OutboxMessage.last_error
)


@dataclass
class BatchResult(BatchCounts):
    """Counts for one outbox batch."""


def claim_batch(owner: str, size: int, lease: Lease | None = None) -> list[int]:
    """Lease up to ``size`` due rows to ``owner`` (under ``lease``, or a new one of
    OUTBOX_LEASE_SECONDS) and commit; return their ids, oldest due first.

    Concurrent workers claim disjoint batches (lease.claim: SKIP LOCKED on
    PostgreSQL, one writer at a time on SQLite).
    """
    lease = lease or Lease.start(owner, current_app.config["OUTBOX_LEASE_SECONDS"])
    now = utcnow()
    candidates = (
        select(OutboxMessage.id)
        .where(
            OutboxMessage.status == OutboxStatus.QUEUED,
            OutboxMessage.next_attempt_at <= now,
            free(OUTBOX, now),
        )
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
        .limit(size)
    )
    known = len(lease.takeovers)
    rows = claim(OUTBOX, candidates, lease, (OutboxMessage.id, OutboxMessage.next_attempt_at))
    db.session.commit()
    for takeover in lease.takeovers[known:]:
        log.warning(
            "outbox: took over %d rows (%d-%d) whose lease ran out (owner %s, token %s)",
            len(takeover.ids),
            takeover.ids[0],
            takeover.ids[-1],
            takeover.owner,
            takeover.until.isoformat(),
        )
    return [row_id for row_id, _ in sorted(rows, key=lambda row: (row[1], row[0]))]


def process_batch(app: Flask, owner: str | None = None) -> BatchResult:
    """Claim one batch, render it, send it over one connection, record outcomes."""
    lease = Lease.start(owner or worker_id(), app.config["OUTBOX_LEASE_SECONDS"])
    result = BatchResult()
    ids = claim_batch(lease.owner or "", app.config["OUTBOX_BATCH_SIZE"], lease)
    if not ids:
        return result
    rendered = _render(ids, result)
    db.session.commit()  # end the read transaction before any network I/O
    if not rendered:
        return result
    _send(app, rendered, lease, result)
    log.info(
        "outbox batch: %d sent, %d retried, %d failed, %d skipped",
        result.sent,
        result.retried,
        result.failed,
        result.skipped,
    )
    return result


def _render(ids: list[int], result: BatchResult) -> list[tuple[int, OutgoingMail]]:
    """Render each claimed row; a row that cannot be rendered is settled on its
    own (skipped, failed or backed off) and the rest go on."""
    rendered: list[tuple[int, OutgoingMail]] = []
    for row_id in ids:
        row = db.session.get(OutboxMessage, row_id)
        if row is None:  # erased meanwhile
            continue
        try:
            rendered.append((row_id, returning_to(render_outbox_message(row), "o", row_id)))
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
    return rendered


def _send(
    app: Flask, rendered: list[tuple[int, OutgoingMail]], lease: Lease, result: BatchResult
) -> None:
    """Send a rendered batch over one connection, recording sent rows as it goes.

    Sent rows are marked every OUTBOX_FENCE_CHUNK mails (or OUTBOX_FENCE_SECONDS)
    in one statement fenced by the lease token, which also renews the lease on
    the rows still to send once half of it has passed: a batch slower than its
    lease keeps its rows. When the rows are no longer this worker's, or the
    statement fails, the batch stops at once and the connection is closed.
    Each single message must finish within half the lease (OUTBOX_LEASE_SECONDS
    well above MAIL_TIMEOUT).
    """
    ids = [row_id for row_id, _ in rendered]
    fence = Fence(
        OUTBOX,
        lease,
        chunk=app.config["OUTBOX_FENCE_CHUNK"],
        seconds=app.config["OUTBOX_FENCE_SECONDS"],
        sent_values=lambda: {"status": OutboxStatus.SENT, "sent_at": utcnow(), "last_error": None},
        batch=f"outbox rows {min(ids)}-{max(ids)}",
    )
    try:
        with open_transport(app) as transport:
            for position, (row_id, message) in enumerate(rendered):
                if not fence.check(ids[position:]):
                    break  # leaving the block closes the connection
                try:
                    transport.send(message)
                except PermanentFailure as exc:
                    _finish(row_id, OutboxStatus.FAILED, str(exc), lease)
                    result.failed += 1
                except Exception as exc:
                    # Temporary: the connection may be unusable. Unexpected: back
                    # off on this row only (it fails for good after
                    # OUTBOX_MAX_ATTEMPTS). Either way the rest goes back for the
                    # next batch on a fresh connection.
                    error = str(exc)
                    if not isinstance(exc, TemporaryFailure):
                        log.exception("outbox #%d: unexpected error while sending", row_id)
                        error = f"unexpected error: {exc!r}"
                    fence.flush()
                    _retry(row_id, error, outage=isinstance(exc, ServerUnavailable), lease=lease)
                    _release(ids[position + 1 :], lease)
                    result.retried += 1
                    break
                else:
                    fence.sent(row_id)
    except TemporaryFailure as exc:  # could not connect at all
        for row_id, _ in rendered:
            _retry(row_id, str(exc), outage=isinstance(exc, ServerUnavailable), lease=lease)
        result.retried += len(rendered)
    finally:
        fence.flush()
        result.sent += fence.recorded + fence.unrecorded


def _finish(
    row_id: int, status: OutboxStatus, error: str | None = None, lease: Lease | None = None
) -> None:
    """Record a final outcome (a sent row keeps no error) and end the lease; commit.
    With ``lease``, only a row the lease still holds is touched."""
    values: dict[str, Any] = {"status": status}
    if status == OutboxStatus.SENT:
        values.update(sent_at=utcnow(), last_error=None)
    settle(OUTBOX, [row_id], lease=lease, error=error, **values)
    db.session.commit()


def _retry(row_id: int, error: str, *, outage: bool = False, lease: Lease | None = None) -> None:
    """Schedule another attempt (see mail.retry), or give up after the limit; commit.
    With ``lease``, only a row the lease still holds is touched."""
    attempts = db.session.scalar(select(OutboxMessage.attempts).where(OutboxMessage.id == row_id))
    if attempts is None:  # erased meanwhile
        return
    config = current_app.config
    attempts += 1
    when = next_attempt(
        attempts,
        base_seconds=config["OUTBOX_RETRY_BASE_SECONDS"],
        max_attempts=config["OUTBOX_MAX_ATTEMPTS"],
        outage=outage,
    )
    if when is None:
        values: dict[str, Any] = {"status": OutboxStatus.FAILED}
    else:
        values = {"next_attempt_at": when}
    settle(OUTBOX, [row_id], lease=lease, error=error, attempts=attempts, **values)
    db.session.commit()
    log.warning("outbox #%d: attempt %d failed: %s", row_id, attempts, error)


def _release(ids: list[int], lease: Lease) -> None:
    """Give claimed rows this worker still holds back untouched, for the next batch."""
    if ids:
        release(OUTBOX, ids, lease)
        db.session.commit()
