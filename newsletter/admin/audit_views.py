"""Owners browse and filter the audit trail."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from flask import render_template, request
from flask.typing import ResponseReturnValue
from sqlalchemy import Select, select

from ..extensions import db
from ..models import AuditEntry, Role
from . import bp
from .access import requires
from .pagination import requested_page

FILTERS = ("actor", "action", "object_type", "object_id", "since", "until")


def _day(raw: str) -> date | None:
    """An ISO date from a filter field, or None when empty or malformed."""
    try:
        return date.fromisoformat(raw) if raw else None
    except ValueError:
        return None


def filtered_audit(args: dict[str, str]) -> Select[tuple[AuditEntry]]:
    """The audit query for the given filters, newest first."""
    query = select(AuditEntry)
    if args.get("actor"):
        query = query.where(AuditEntry.actor_email.contains(args["actor"].lower()[:320]))
    if args.get("action"):
        query = query.where(AuditEntry.action.startswith(args["action"][:64]))
    if args.get("object_type"):
        query = query.where(AuditEntry.object_type == args["object_type"][:32])
    if args.get("object_id"):
        query = query.where(AuditEntry.object_id == args["object_id"][:64])
    since, until = _day(args.get("since", "")), _day(args.get("until", ""))
    if since:
        query = query.where(AuditEntry.occurred_at >= datetime.combine(since, time(), UTC))
    if until:
        end = datetime.combine(until + timedelta(days=1), time(), UTC)
        query = query.where(AuditEntry.occurred_at < end)
    return query.order_by(AuditEntry.id.desc())


@bp.route("/audit")
@requires(Role.OWNER)
def audit_log() -> ResponseReturnValue:
    """The audit trail, filtered by actor, action, object and dates."""
    args = {key: request.args.get(key, "").strip() for key in FILTERS}
    page = requested_page(50)
    rows = db.session.scalars(filtered_audit(args).offset(page.offset).limit(page.size + 1)).all()
    return render_template(
        "admin/audit.html",
        entries=rows[: page.size],
        has_next=len(rows) > page.size,
        page=page,
        filters=args,
        actions=_known_actions(),
    )


def _known_actions() -> list[str]:
    """Distinct action names, for the filter's suggestions."""
    return list(db.session.scalars(select(AuditEntry.action).distinct().order_by("action")))
