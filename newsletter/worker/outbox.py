"""The outbox loop: claim due mail under a lease, send it, record the outcome.

Delivery is at-least-once: a row is marked sent right after the server took
it, so only a crash between those two steps can send a mail twice. A crashed
worker's claims expire after OUTBOX_LEASE_SECONDS and another worker takes
them over; a live worker renews its lease while it sends (newsletter/lease.py),
so a batch slower than the lease is not taken over and sent twice. No
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
from ..lease import Leasable, Lease, claim, free, release, renew, settle, worker_id
from ..mail.headers import UnsafeHeader
from ..mail.message import OutgoingMail
from ..mail.render import NothingToSend
from ..mail.retry import next_attempt
from ..mail.transport import PermanentFailure, ServerUnavailable, TemporaryFailure, open_transport
from ..models import OutboxMessage, OutboxStatus, utcnow
from .dispatch import render_outbox_message

log = logging.getLogger(__name__)

OUTBOX = Leasable(
    OutboxMessage.id, OutboxMessage.lease_until, OutboxMessage.leased_by, OutboxMessage.last_error
)


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
    rows = claim(OUTBOX, candidates, lease, (OutboxMessage.id, OutboxMessage.next_attempt_at))
    db.session.commit()
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
    return rendered


def _send(
    app: Flask, rendered: list[tuple[int, OutgoingMail]], lease: Lease, result: BatchResult
) -> None:
    """Send a rendered batch over one connection, marking each row as it goes.

    Once half the lease has passed, the lease on the rows still to send is
    renewed before the next message: otherwise, on a slow server, those rows'
    lease ran out mid-batch and another worker sent them too. Each single
    message must finish within half the lease (OUTBOX_LEASE_SECONDS well above
    MAIL_TIMEOUT).
    """
    try:
        with open_transport(app) as transport:
            for position, (row_id, message) in enumerate(rendered):
                if lease.due():
                    renew(OUTBOX, [r for r, _ in rendered[position:]], lease)
                    db.session.commit()
                try:
                    transport.send(message)
                except PermanentFailure as exc:
                    _finish(row_id, OutboxStatus.FAILED, str(exc))
                    result.failed += 1
                except TemporaryFailure as exc:
                    # The connection may be unusable: retry this row and release the rest.
                    _retry(row_id, str(exc), outage=isinstance(exc, ServerUnavailable))
                    _release([r for r, _ in rendered[position + 1 :]], lease)
                    result.retried += 1
                    break
                except Exception as exc:
                    # Unexpected: back off on this row only (it fails for good after
                    # OUTBOX_MAX_ATTEMPTS) and, as the connection's state is unknown,
                    # hand the rest back for the next batch on a fresh connection.
                    log.exception("outbox #%d: unexpected error while sending", row_id)
                    _retry(row_id, f"unexpected error: {exc!r}")
                    _release([r for r, _ in rendered[position + 1 :]], lease)
                    result.retried += 1
                    break
                else:
                    _finish(row_id, OutboxStatus.SENT)
                    result.sent += 1
    except TemporaryFailure as exc:  # could not connect at all
        for row_id, _ in rendered:
            _retry(row_id, str(exc), outage=isinstance(exc, ServerUnavailable))
        result.retried += len(rendered)


def _finish(row_id: int, status: OutboxStatus, error: str | None = None) -> None:
    """Record a final outcome (a sent row keeps no error) and end the lease; commit."""
    values: dict[str, Any] = {"status": status}
    if status == OutboxStatus.SENT:
        values.update(sent_at=utcnow(), last_error=None)
    settle(OUTBOX, [row_id], error=error, **values)
    db.session.commit()


def _retry(row_id: int, error: str, *, outage: bool = False) -> None:
    """Schedule another attempt (see mail.retry), or give up after the limit; commit."""
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
        settle(OUTBOX, [row_id], error=error, attempts=attempts, status=OutboxStatus.FAILED)
    else:
        settle(OUTBOX, [row_id], error=error, attempts=attempts, next_attempt_at=when)
    db.session.commit()
    log.warning("outbox #%d: attempt %d failed: %s", row_id, attempts, error)


def _release(ids: list[int], lease: Lease) -> None:
    """Give claimed rows this worker still holds back untouched, for the next batch."""
    if ids:
        release(OUTBOX, ids, lease)
        db.session.commit()
