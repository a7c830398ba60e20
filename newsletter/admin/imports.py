"""Staff console: CSV import (upload, preview and column mapping, progress).

The request only stores the file and, once mapped, queues it; a worker runs
it (newsletter/imports/run.py), so 100,000 rows never hold a request open.
"""

from __future__ import annotations

from typing import Any

from flask import abort, flash, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_login import current_user

from ..imports import jobs
from ..imports.jobs import not_reactivated
from ..imports.parse import DELIMITER_NAMES, MAX_FILE_BYTES, FileProblem, preview
from ..imports.validate import RowError, shown_errors
from ..models import ImportJob, ImportStatus, Role
from ..subscriptions.lists import open_lists
from ..validation import InvalidInput
from . import bp
from .access import client_ip, requires, staff
from .import_forms import MappingForm, UploadForm
from .pagination import requested_page

# The app-wide MAX_CONTENT_LENGTH (64 KB) protects every other form. The upload
# alone may carry a file of up to MAX_FILE_BYTES plus the form around it.
MAX_UPLOAD_REQUEST = MAX_FILE_BYTES + 64 * 1024


@bp.before_app_request
def _allow_large_upload() -> None:
    """Raise the body limit for the upload request only, and only for editors.

    This runs before the blueprint's CSRF check, which is what first reads
    (and so limits) the body. Anyone not logged in as an editor keeps the
    64 KB limit, so no anonymous request can make us parse 20 MB.
    """
    if (
        request.endpoint == "admin.import_upload"
        and request.method == "POST"
        and current_user.is_authenticated
        and staff().may(Role.EDITOR)
    ):
        request.max_content_length = MAX_UPLOAD_REQUEST


def _upload_form() -> UploadForm:
    form = UploadForm()
    form.list_id.choices = [(m.id, m.name) for m in open_lists()]
    return form


def _index(form: UploadForm, errors: list[RowError] | None = None) -> str:
    page = requested_page(size=20)
    rows = jobs.recent_jobs(page.offset, page.size + 1)
    return render_template(
        "admin/imports.html",
        form=form,
        errors=errors or [],
        jobs=rows[: page.size],
        page=page,
        has_next=len(rows) > page.size,
        max_mb=MAX_FILE_BYTES // 2**20,
    )


@bp.route("/imports")
@requires(Role.EDITOR)
def imports() -> ResponseReturnValue:
    """The upload form and the imports so far."""
    return _index(_upload_form())


@bp.route("/imports", methods=["POST"], endpoint="import_upload")
@requires(Role.EDITOR)
def import_upload() -> ResponseReturnValue:
    """Store an uploaded file as a job, then show its preview and mapping."""
    form = _upload_form()
    if not form.validate_on_submit():
        return _index(form), 400
    upload = form.file.data
    try:
        job = jobs.create_job(
            upload.stream.read(MAX_FILE_BYTES + 1),
            upload.filename or "",
            int(form.list_id.data),
            actor=staff(),
            ip=client_ip(),
        )
    except FileProblem as exc:
        where = _("Line %(n)s: ", n=exc.line) if exc.line else ""
        form.file.errors = [where + exc.message]
    except jobs.RowsRefused as exc:
        form.file.errors = [_("Some cells contain NUL characters. Nothing was stored.")]
        return _index(form, exc.errors), 400
    except InvalidInput as exc:
        form.list_id.errors = [exc.message]
    else:
        return redirect(url_for("admin.import_job", job_id=job.id))
    return _index(form), 400


def _job_or_404(job_id: int) -> ImportJob:
    return jobs.get_job(job_id) or abort(404)


@bp.route("/imports/<id:job_id>")
@requires(Role.EDITOR)
def import_job(job_id: int) -> ResponseReturnValue:
    """Preview and mapping while uploaded; progress, then the result, afterwards."""
    job = _job_or_404(job_id)
    if job.status == ImportStatus.UPLOADED:
        form = MappingForm(data=_mapped_fields(job))
        return _mapping_page(job, form)
    return render_template(
        "admin/import_job.html",
        job=_ShownJob(job),
        progress=_progress(job),
        list_name=_list_name(job),
    )


class _ShownJob:
    """A job as its page reads it: the stored errors (English) in the page's language."""

    def __init__(self, job: ImportJob) -> None:
        self._job = job
        self.errors = shown_errors(job.errors)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._job, name)


def _mapped_fields(job: ImportJob) -> dict[str, str]:
    return {str(f): str(p) for p, f in (job.mapping or {}).items() if f}


def _list_name(job: ImportJob) -> str:
    return next((m.name for m in open_lists() if m.id == job.list_id), str(job.list_id))


def _mapping_page(job: ImportJob, form: MappingForm, status: int = 200) -> ResponseReturnValue:
    table = jobs.table_of(job)
    form.set_columns(table.header)
    return (
        render_template(
            "admin/import_mapping.html",
            job=job,
            form=form,
            header=table.header,
            rows=preview(table),
            delimiter=DELIMITER_NAMES[table.delimiter],
            list_name=_list_name(job),
        ),
        status,
    )


@bp.route("/imports/<id:job_id>/queue", methods=["POST"])
@requires(Role.EDITOR)
def import_queue(job_id: int) -> ResponseReturnValue:
    """Save the mapping and queue the job for a worker."""
    job = _job_or_404(job_id)
    if job.status != ImportStatus.UPLOADED:
        flash(_("This import is already queued."), "info")
        return redirect(url_for("admin.import_job", job_id=job.id))
    form = MappingForm()
    form.set_columns(jobs.table_of(job).header)
    if not form.validate_on_submit():
        return _mapping_page(job, form, 400)
    try:
        jobs.queue_job(job, form.choices(), actor=staff(), ip=client_ip())
    except InvalidInput as exc:
        field = getattr(form, exc.field, form.email)
        field.errors = [exc.message]
        return _mapping_page(job, form, 400)
    flash(_("The import is queued. A worker runs it in the background."), "success")
    return redirect(url_for("admin.import_job", job_id=job.id))


@bp.route("/imports/<id:job_id>/discard", methods=["POST"])
@requires(Role.EDITOR)
def import_discard(job_id: int) -> ResponseReturnValue:
    """Drop an uploaded file that was not queued."""
    job = _job_or_404(job_id)
    try:
        jobs.discard_job(job, actor=staff(), ip=client_ip())
    except InvalidInput as exc:
        flash(exc.message, "error")
        return redirect(url_for("admin.import_job", job_id=job.id))
    flash(_("The file is discarded."), "info")
    return redirect(url_for("admin.imports"))


@bp.route("/imports/<id:job_id>/progress")
@requires(Role.EDITOR)
def import_progress(job_id: int) -> ResponseReturnValue:
    """The job's progress as JSON, polled by static/admin-import.js."""
    return jsonify(_progress(_job_or_404(job_id)))


def _progress(job: ImportJob) -> dict[str, object]:
    finished = job.status in (ImportStatus.DONE, ImportStatus.FAILED)
    return {
        "status": str(job.status),
        "finished": finished,
        "total_rows": job.total_rows,
        "processed_rows": job.processed_rows,
        # Checking is most of the way; 100 only once the write has committed.
        "percent": 100 if finished else min(job.processed_rows * 100 // max(job.total_rows, 1), 99),
        "imported_active": job.imported_active,
        "imported_pending": job.imported_pending,
        "unchanged": job.unchanged,
        "not_reactivated": not_reactivated(job),
        "errors": len(job.errors or []) if job.status == ImportStatus.FAILED else 0,
    }
