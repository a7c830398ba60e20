"""Staff console: the deliverability figures (bounces, complaints, unsubscribes)
over the last 30 days and per campaign, and whether every unsubscribe took
effect. Read-only: any role may look."""

from __future__ import annotations

from typing import Any

from flask import current_app, render_template
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _

from ..deliverability.autopause import COMPLAINT_RULE
from ..deliverability.compliance import LIMIT, TARGET, WINDOW_DAYS, deliverability_report
from ..models import Role
from . import bp
from .access import requires


def percent(rate: float | None, digits: int = 2) -> str:
    """A rate as the console writes it ("0.12 %"), or a dash without one."""
    if rate is None:
        return "\N{EN DASH}"
    return f"{rate * 100:.{digits}f} %"


def line(rate: float) -> str:
    """A line (0.001) as the console writes it ("0.1 %")."""
    return f"{rate * 100:g} %"


def pause_text(reason: dict[str, Any] | None) -> str:
    """Why a campaign paused itself, in the reader's language."""
    if not reason:
        return ""
    values = {
        "rate": percent(float(reason["rate"])),
        "count": reason["count"],
        "of": reason["of"],
        "line": line(float(reason["line"])),
    }
    if reason.get("rule") == COMPLAINT_RULE:
        return _(
            "Paused automatically: the complaint rate %(rate)s (%(count)s of %(of)s mails "
            "sent) passed the %(line)s line.",
            **values,
        )
    return _(
        "Paused automatically: the hard-bounce rate %(rate)s (%(count)s of %(of)s mails "
        "attempted) passed the %(line)s line.",
        **values,
    )


@bp.app_context_processor
def _pause_text() -> dict[str, object]:
    """``pause_text(reason)`` in templates (the campaign page shows it too)."""
    return {"pause_text": pause_text}


@bp.route("/deliverability")
@requires(Role.VIEWER)
def deliverability() -> ResponseReturnValue:
    """Rates over the window and per campaign, against the lines, and mail
    sent after an unsubscribe (which must be none)."""
    return render_template(
        "admin/deliverability.html",
        report=deliverability_report(),
        window=WINDOW_DAYS,
        target=line(TARGET),
        limit=line(LIMIT),
        hard_line=line(float(current_app.config["CAMPAIGN_PAUSE_HARD_BOUNCE_RATE"])),
        min_sends=int(current_app.config["CAMPAIGN_PAUSE_MIN_SENDS"]),
        percent=percent,
    )
