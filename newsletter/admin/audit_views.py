"""Owners browse and filter the audit trail."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flask import render_template, request
from flask.typing import ResponseReturnValue
from sqlalchemy import Select, select

from ..extensions import db
from ..models import AuditEntry, Role
from ..web.params import query_day, query_text
from . import bp
from .access import requires
from .pagination import requested_page

FILTERS = ("actor", "action", "object_type", "object_id", "since", "until")


@dataclass(frozen=True)
class AuditFilter:
    """What the audit page is filtered by; empty text and None mean "any"."""

    actor: str = ""
    action: str = ""
    object_type: str = ""
    object_id: str = ""
    since: datetime | None = None  # the first instant shown
    before: datetime | None = None  # the first instant no longer shown


def requested_filter() -> AuditFilter:
    """The filters in the query string, each text no longer than its column; a
    malformed one is a 400 (see web.params)."""
    return AuditFilter(
        actor=query_text("actor", 320),
        action=query_text("action", 64),
        object_type=query_text("object_type", 32),
        object_id=query_text("object_id", 64),
        since=query_day("since"),
        before=query_day("until", end=True),
    )


def filtered_audit(flt: AuditFilter) -> Select[tuple[AuditEntry]]:
    """The audit query for the given filters, newest first."""
    query = select(AuditEntry)
    if flt.actor:
        query = query.where(AuditEntry.actor_email.contains(flt.actor.lower()))
    if flt.action:
        query = query.where(AuditEntry.action.startswith(flt.action))
    if flt.object_type:
        query = query.where(AuditEntry.object_type == flt.object_type)
    if flt.object_id:
        query = query.where(AuditEntry.object_id == flt.object_id)
    if flt.since:
        query = query.where(AuditEntry.occurred_at >= flt.since)
    if flt.before:
        query = query.where(AuditEntry.occurred_at < flt.before)
    return query.order_by(AuditEntry.id.desc())


@bp.route("/audit")
@requires(Role.OWNER)
def audit_log() -> ResponseReturnValue:
    """The audit trail, filtered by actor, action, object and dates."""
    flt = requested_filter()
    page = requested_page(50)
    rows = db.session.scalars(filtered_audit(flt).offset(page.offset).limit(page.size + 1)).all()
    return render_template(
        "admin/audit.html",
        entries=rows[: page.size],
        has_next=len(rows) > page.size,
        page=page,
        filters={name: request.args.get(name, "").strip() for name in FILTERS},
        actions=_known_actions(),
    )


def _known_actions() -> list[str]:
    """Distinct action names, for the filter's suggestions."""
    return list(db.session.scalars(select(AuditEntry.action).distinct().order_by("action")))
