"""Running an import job in a worker (or the command), whole or not at all.

How "whole or not at all" is guaranteed:
1. The web request only stores the file in an ``ImportJob`` row (so any worker
   on any host can run it) and, once mapped, queues it.
2. A worker claims the job with a lease (newsletter/lease.py: SKIP LOCKED on
   PostgreSQL; SQLite's single writer gives the same) and reads and checks
   every row in short transactions that only move ``processed_rows``. If any
   row has an error the job ends ``failed`` with the errors, and nothing else
   has been written.
3. Otherwise every write (subscribers, subscriptions, outbox, ledger events,
   audit entry, the job's result) is one transaction. A crash rolls it back.
Fencing: the lease's expiry time is also the claim's token. Each progress step
renews it only ``WHERE lease_until = token``, and the final write does the
same, so a worker that stalled past its lease while another took the job over
finds its token gone and rolls back instead of importing twice.

On SQLite the final transaction holds the single write lock, so other
writers (and, with BEGIN IMMEDIATE, other requests) wait until it commits;
large imports belong on PostgreSQL (see benchmarks/import_rows.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .. import lease
from ..extensions import db
from ..models import ImportJob, ImportStatus, MailingList, StaffUser, utcnow
from ..service_messages import N_
from ..staff import audit
from ..validation import InvalidInput
from .apply import ConcurrentChange, apply_rows
from .jobs import IMPORT_JOBS, LEASE, Claim, LeaseLost, table_of
from .mapping import check_mapping
from .parse import FileProblem, data_records
from .validate import INTERNAL_ERROR, MORE_ERRORS, RowError, validate_rows

log = logging.getLogger(__name__)

CHANGED_MEANWHILE = N_(
    "Subscriptions changed while the file was imported. Nothing was imported; upload it again."
)


def claim_next() -> Claim | None:
    """Lease the oldest queued job (or a running one whose worker's lease ran
    out), mark it running from the start, and commit."""
    job_lease = lease.Lease.start(None, LEASE.total_seconds())
    now = utcnow()
    candidates = (
        select(ImportJob.id)
        .where(
            ImportJob.status.in_((ImportStatus.QUEUED, ImportStatus.RUNNING)),
            lease.free(IMPORT_JOBS, now),
        )
        .order_by(ImportJob.id)
        .limit(1)
    )
    rows = lease.claim(
        IMPORT_JOBS,
        candidates,
        job_lease,
        status=ImportStatus.RUNNING,
        started_at=now,
        processed_rows=0,
    )
    db.session.commit()
    return Claim(rows[0][0], job_lease) if rows else None


def run_claimed(claim: Claim, on_progress: Callable[[int], None] | None = None) -> ImportJob:
    """Check every row, then import them all in one transaction (module docstring)."""
    try:
        return _run(claim, on_progress)
    except LeaseLost:
        db.session.rollback()
        log.warning("import #%d: lease lost to another worker; result dropped", claim.job_id)
        raise
    except (ConcurrentChange, IntegrityError):
        # Someone signed up, confirmed or left at the same moment (PostgreSQL):
        # the whole import is rolled back; running it again sees their change.
        db.session.rollback()
        return _finish_failed(claim, [RowError(None, "", CHANGED_MEANWHILE)], 1)
    except Exception as exc:
        db.session.rollback()
        log.exception("import #%d failed", claim.job_id)
        internal = INTERNAL_ERROR % {"name": exc.__class__.__name__}
        _finish_failed(claim, [RowError(None, "", internal)], 1)
        raise


def _run(claim: Claim, on_progress: Callable[[int], None] | None) -> ImportJob:
    job = db.session.get(ImportJob, claim.job_id)
    if job is None:
        raise LeaseLost(claim.job_id)
    list_id, creator = job.list_id, job.created_by_id
    try:
        table = table_of(job)
        columns = check_mapping(job.mapping, len(table.header))
    except FileProblem as exc:
        return _finish_failed(claim, [RowError(exc.line, "file", exc.message)], 1)
    except InvalidInput as exc:
        return _finish_failed(claim, [RowError(None, exc.field, exc.message)], 1)
    db.session.commit()  # no transaction stays open while rows are checked

    def progress(rows: int) -> None:
        _renew(claim, rows)
        if on_progress is not None:
            on_progress(rows)

    now = utcnow()
    checked = validate_rows(
        data_records(table), columns, len(table.header), now=now, on_progress=progress
    )
    if not checked.ok:
        return _finish_failed(claim, checked.errors, checked.error_count)

    actor = db.session.get(StaffUser, creator) if creator else None
    counts = apply_rows(
        checked.rows,
        list_id,
        job_id=claim.job_id,
        imported_by=actor.id if actor else None,
        now=utcnow(),  # the events happen now, not when checking began
    )
    _fenced_finish(
        claim,
        status=ImportStatus.DONE,
        processed_rows=len(checked.rows),
        imported_active=counts.active,
        imported_pending=counts.pending,
        unchanged=counts.unchanged,
        errors=[n.as_dict() for n in counts.notices],
        content=None,  # the addresses now live where erasure finds them
        finished_at=utcnow(),
    )
    job = db.session.get(ImportJob, claim.job_id) or job
    audit.record(
        actor,
        "import.done",
        "import",
        claim.job_id,
        details={
            "list": _slug(job.list_id),
            "file": job.filename,
            "rows": len(checked.rows),
            "active": counts.active,
            "pending": counts.pending,
            "unchanged": counts.unchanged,
            "not_reactivated": counts.not_reactivated,
        },
    )
    db.session.commit()
    db.session.refresh(job)
    return job


def _renew(claim: Claim, rows: int) -> None:
    """Record progress and extend the lease, if this worker still holds it
    (LeaseLost otherwise); commit."""
    if lease.renew(IMPORT_JOBS, [claim.job_id], claim.lease, processed_rows=rows) != 1:
        db.session.rollback()
        raise LeaseLost(claim.job_id)
    db.session.commit()


def _fenced_finish(claim: Claim, **values: Any) -> None:
    """End the job's lease with ``values``, only while ``claim`` still holds it;
    LeaseLost otherwise. The caller commits."""
    if lease.settle(IMPORT_JOBS, [claim.job_id], lease=claim.lease, **values) != 1:
        db.session.rollback()
        raise LeaseLost(claim.job_id)


def _finish_failed(claim: Claim, errors: list[RowError], error_count: int) -> ImportJob:
    """End the job as failed, with its errors; nothing was imported. Commits."""
    shown = [e.as_dict() for e in errors]
    if error_count > len(errors):
        more = error_count - len(errors)
        shown.append({"line": None, "field": "", "message": MORE_ERRORS % {"n": more}})
    _fenced_finish(
        claim,
        status=ImportStatus.FAILED,
        errors=shown,
        content=None,
        finished_at=utcnow(),
    )
    job = db.session.get(ImportJob, claim.job_id)
    assert job is not None
    actor = db.session.get(StaffUser, job.created_by_id) if job.created_by_id else None
    audit.record(
        actor,
        "import.failed",
        "import",
        claim.job_id,
        details={"list": _slug(job.list_id), "file": job.filename, "errors": error_count},
    )
    db.session.commit()
    db.session.refresh(job)
    return job


def _slug(list_id: int) -> str:
    """A list's slug, for audit entries."""
    return db.session.scalar(select(MailingList.slug).where(MailingList.id == list_id)) or ""


def run_next_import() -> int:
    """The worker's step: run one queued import, if any; 1 when one ran."""
    claim = claim_next()
    if claim is None:
        return 0
    try:
        run_claimed(claim)
    except Exception:
        # Already logged and recorded on the job (failed) by run_claimed; the
        # worker goes on with mail.
        log.debug("import #%d did not complete", claim.job_id)
    return 1
