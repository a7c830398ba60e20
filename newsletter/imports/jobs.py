"""Import jobs: upload, map and queue a CSV file (the web request's and the command's part).

The worker's part, and how an import is whole or not at all, is in ``run.py``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select

from ..extensions import db
from ..lease import Leasable, Lease
from ..models import ImportJob, ImportStatus, MailingList, StaffUser, utcnow
from ..service_messages import N_
from ..service_messages import page_gettext as _
from ..staff import audit
from ..validation import CONTROL_CHARACTERS, InvalidInput
from .mapping import build_mapping, guess_mapping
from .parse import Table, count_records, data_records, decode, read_table
from .validate import RowError

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=10)
# Jobs record no owner's name: the lease's token alone fences them.
IMPORT_JOBS = Leasable(ImportJob.id, ImportJob.lease_until)
MAX_FILENAME = 255
# Stored in English on the job (a staff member discards it; anyone may read it).
DISCARDED = N_("Discarded before it was queued.")


class LeaseLost(RuntimeError):
    """Another worker took the job over: this one must not write its result."""


class RowsRefused(ValueError):
    """The file has rows that cannot even be stored (NUL characters)."""

    def __init__(self, errors: list[RowError]) -> None:
        super().__init__(f"{len(errors)} rows refused")
        self.errors = errors


@dataclass
class Claim:
    """A job this worker holds, under ``lease``: every write checks that the job
    still carries the lease's token (its expiry), so a worker whose job was taken
    over cannot write."""

    job_id: int
    lease: Lease


def create_job(
    data: bytes, filename: str, list_id: int, *, actor: StaffUser | None, ip: str | None
) -> ImportJob:
    """Store an uploaded file as a job waiting for its column mapping, and commit.

    Raises FileProblem (encoding, shape), RowsRefused (NUL bytes, which
    PostgreSQL text cannot hold) or InvalidInput (the list).
    """
    table = read_table(decode(data))
    refused = _nul_errors(table)
    if refused:
        raise RowsRefused(refused)
    mailing_list = db.session.get(MailingList, list_id)
    if mailing_list is None or mailing_list.archived_at is not None:
        raise InvalidInput("list", _("Choose an open list."))
    name = CONTROL_CHARACTERS.sub("", filename.replace("\\", "/").rsplit("/", 1)[-1])
    job = ImportJob(
        list_id=list_id,
        created_by_id=actor.id if actor else None,
        filename=name[:MAX_FILENAME] or "import.csv",
        content=table.text,
        mapping=guess_mapping(table.header),
        status=ImportStatus.UPLOADED,
        total_rows=count_records(table),
        errors=[],
    )
    db.session.add(job)
    db.session.flush()
    audit.record(
        actor,
        "import.upload",
        "import",
        job.id,
        details={"list": mailing_list.slug, "file": job.filename, "rows": job.total_rows},
        ip=ip,
    )
    db.session.commit()
    return job


def _nul_errors(table: Table) -> list[RowError]:
    """Cells holding NUL, by line and column (a cheap scan first: they are rare)."""
    if "\x00" not in table.text:
        return []
    errors = []
    for line, cells in data_records(table):
        for position, cell in enumerate(cells):
            if "\x00" in cell:
                heading = table.header[position] if position < len(table.header) else ""
                column = heading or _("column %(n)s", n=position + 1)
                errors.append(RowError(line, column, _("Contains NUL.")))
    return errors[:500] or [RowError(1, "header", _("Contains NUL."))]


def table_of(job: ImportJob) -> Table:
    """The stored file of a job that has not run yet."""
    if job.content is None:
        raise InvalidInput("file", _("This import has already run or was discarded."))
    return read_table(job.content)


def queue_job(
    job: ImportJob,
    choices: dict[str, str],
    *,
    actor: StaffUser | None,
    ip: str | None,
    run_here: bool = False,
) -> Claim | None:
    """Save the column mapping and queue the job, and commit.

    With ``run_here`` (the command line) the job is claimed at once for the
    caller instead of being left to a worker; the claim is returned.
    """
    if job.status != ImportStatus.UPLOADED:
        raise InvalidInput("file", _("This import is already queued."))
    header = table_of(job).header
    job.mapping = build_mapping(choices, len(header))
    now = utcnow()
    claim = None
    if run_here:
        lease = Lease.start(None, LEASE.total_seconds())
        job.status, job.started_at, job.lease_until = ImportStatus.RUNNING, now, lease.until
        claim = Claim(job.id, lease)
    else:
        job.status = ImportStatus.QUEUED
    fields = {str(f): header[int(p)] for p, f in job.mapping.items() if f}
    audit.record(actor, "import.queue", "import", job.id, details={"columns": fields}, ip=ip)
    db.session.commit()
    return claim


def discard_job(job: ImportJob, *, actor: StaffUser | None, ip: str | None) -> None:
    """Drop an uploaded file that was never queued, and commit."""
    if job.status != ImportStatus.UPLOADED:
        raise InvalidInput("file", _("Only an import that has not been queued can be discarded."))
    job.status, job.content, job.finished_at = ImportStatus.FAILED, None, utcnow()
    job.errors = [{"line": None, "field": "", "message": DISCARDED}]
    audit.record(actor, "import.discard", "import", job.id, details={"file": job.filename}, ip=ip)
    db.session.commit()


def not_reactivated(job: ImportJob) -> int:
    """Rows of a finished job left out (unsubscribed, bounced, suppressed)."""
    if job.status != ImportStatus.DONE:
        return 0
    return max(job.total_rows - job.imported_active - job.imported_pending - job.unchanged, 0)


def get_job(job_id: int) -> ImportJob | None:
    """One job, or None."""
    return db.session.get(ImportJob, job_id)


def recent_jobs(offset: int, limit: int) -> list[tuple[ImportJob, str]]:
    """Jobs newest first, with their list's name (one page, plus one to see if more follow)."""
    query = (
        select(ImportJob, MailingList.name)
        .join(MailingList, MailingList.id == ImportJob.list_id)
        .order_by(ImportJob.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return [(job, name) for job, name in db.session.execute(query)]
