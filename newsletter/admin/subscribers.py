"""Staff console: the subscriber list (search, filters, keyset pages) and CSV export.

The subscriber page itself, proof of consent, unsubscribe and erasure are in
subscriber_detail.py (imported at the end, which adds its routes).
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Response, render_template, request, stream_with_context
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from ..extensions import db
from ..models import MailingList, Role, SubscriptionStatus
from ..subscriptions.csv_export import csv_chunks, export_rows, record_export
from ..subscriptions.search import (
    SearchPage,
    SubscriberFilter,
    parse_filter,
    search_subscribers,
)
from ..validation import InvalidInput
from ..web.params import ID_MAX, query_number
from . import bp
from .access import client_ip, requires, staff
from .subscriber_forms import ExportForm

PAGE_SIZE = 50


@bp.route("/subscribers")
@requires(Role.VIEWER)
def subscribers() -> ResponseReturnValue:
    """Search by address or name, filter by list and status, one keyset page at a time."""
    args = {key: request.args.get(key, "")[:300] for key in ("q", "list", "status")}
    before = query_number("before", ID_MAX)
    error = None
    try:
        flt = parse_filter(args)
    except InvalidInput as exc:
        flt, error = SubscriberFilter(), exc
        result = SearchPage(subscribers=[], next_before=None)
    else:
        result = search_subscribers(flt, before=before, size=PAGE_SIZE)
    return render_template(
        "admin/subscribers.html",
        args=args,
        error=error,
        flt=flt,
        page=result,
        first_page=before is None,
        lists=_lists(),
        statuses=list(SubscriptionStatus),
        export_form=ExportForm(formdata=None),
        may_edit=staff().may(Role.EDITOR),
    )


@bp.route("/subscribers/export", methods=["POST"])
@requires(Role.EDITOR)
def subscriber_export() -> ResponseReturnValue:
    """The current filter's subscribers as CSV, streamed; the export is audited."""
    form = ExportForm()
    if not form.validate():
        return Response("Bad export request.\n", status=400, mimetype="text/plain")
    try:
        flt = parse_filter(
            {"q": form.q.data or "", "list": form.list.data or "", "status": form.status.data or ""}
        )
    except InvalidInput as exc:
        return Response(f"{exc.message}\n", status=400, mimetype="text/plain")
    record_export(flt, actor=staff(), ip=client_ip(), target="download")
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    name = f"subscribers-{flt.list_slug or 'all'}-{stamp}.csv"
    response = Response(
        stream_with_context(csv_chunks(export_rows(flt))), mimetype="text/csv; charset=utf-8"
    )
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Cache-Control"] = "no-store"
    return response


def _lists() -> list[MailingList]:
    """Every list for the filter, open ones first."""
    return list(
        db.session.scalars(
            select(MailingList).order_by(MailingList.archived_at.is_not(None), MailingList.name)
        )
    )


from . import subscriber_detail  # noqa: E402, F401  (adds the subscriber page's routes)
