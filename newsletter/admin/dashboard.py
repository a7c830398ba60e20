"""The console's start page: subscribers, ledger activity, the signup intake,
the ledger's latest checkpoint, the complaint rate, campaigns in progress."""

from __future__ import annotations

from datetime import timedelta

from flask import current_app, render_template
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_babel import ngettext

from ..config import DEFAULTS
from ..deliverability.compliance import LIMIT, TARGET, window_figures
from ..deliverability.compliance import WINDOW_DAYS as DELIVERABILITY_DAYS
from ..ledger.lag import LAG_FACTOR, seal_interval, seal_state
from ..models import ConsentEventType, Role, SubscriptionStatus, utcnow
from ..reports.chart import Series, line_chart
from ..reports.dashboard import WINDOW_DAYS
from ..reports.dashboard import dashboard as collect
from ..subscriptions.intake import queue_state
from . import bp
from .access import requires
from .deliverability import line, percent


def _series_labels() -> dict[str, str]:
    """The chart's series (ledger events) as the console names them."""
    return {
        ConsentEventType.REQUESTED: _("Signups"),
        ConsentEventType.CONFIRMED: _("Confirmations"),
        ConsentEventType.WITHDRAWN: _("Unsubscribes"),
    }


def _age(seconds: float) -> str:
    """How long something has waited, in the unit that reads best."""
    if seconds < 120:
        n = max(int(seconds), 0)
        return ngettext("%(num)s second", "%(num)s seconds", n)
    if seconds < 2 * 3600:
        return ngettext("%(num)s minute", "%(num)s minutes", int(seconds // 60))
    if seconds < 2 * 86400:
        return ngettext("%(num)s hour", "%(num)s hours", int(seconds // 3600))
    return ngettext("%(num)s day", "%(num)s days", int(seconds // 86400))


def _intake() -> dict[str, object]:
    """The intake queue for the page: rows waiting, the oldest's age, failed rows."""
    state = queue_state()
    waited = state.waited()
    return {
        "state": state,
        "age": _age(waited) if waited is not None else None,
        "late": state.late(),
    }


def _sealing() -> dict[str, object]:
    """The ledger for the page: the latest checkpoint (size, time, age), the
    events waiting, and whether sealing lags (the rule of ledger/lag.py)."""
    state = seal_state()
    try:
        interval = seal_interval(current_app.config)
    except ValueError:  # `newsletter check` names the setting
        interval = float(DEFAULTS["LEDGER_SEAL_INTERVAL"])
    age = state.age()
    return {
        "state": state,
        "age": _age(age) if age is not None else None,
        "lagging": state.lagging(interval),
        "limit": _age(LAG_FACTOR * interval),
    }


def _complaints() -> dict[str, object]:
    """The complaint rate of the last 30 days against the Gmail/Yahoo lines."""
    figures = window_figures(utcnow() - timedelta(days=DELIVERABILITY_DAYS))
    return {
        "figures": figures,
        "rate": percent(figures.complaint_rate, 3),
        "target": line(TARGET),
        "limit": line(LIMIT),
        "days": DELIVERABILITY_DAYS,
    }


@bp.route("/")
@requires(Role.VIEWER)
def dashboard() -> ResponseReturnValue:
    """Subscribers per list and status, activity over 90 days, the signups
    waiting for a worker (and failed ones), the ledger's latest checkpoint,
    campaign progress."""
    figures = collect()
    activity = figures.activity
    labels = _series_labels()
    chart = line_chart(
        activity.days,
        [Series(key, labels[key], activity.series[key]) for key in activity.series],
        title=_("Signups, confirmations and unsubscribes per day, last %(n)s days", n=WINDOW_DAYS),
        desc=_(
            "%(start)s to %(end)s (UTC): %(req)s signups, %(conf)s confirmations, "
            "%(wd)s unsubscribes. The table below has the figures for each day.",
            start=activity.days[0].isoformat(),
            end=activity.days[-1].isoformat(),
            req=activity.total(ConsentEventType.REQUESTED),
            conf=activity.total(ConsentEventType.CONFIRMED),
            wd=activity.total(ConsentEventType.WITHDRAWN),
        ),
        chart_id="activity",
    )
    return render_template(
        "admin/dashboard.html",
        figures=figures,
        activity=activity,
        chart=chart,
        labels=labels,
        statuses=list(SubscriptionStatus),
        window=WINDOW_DAYS,
        intake=_intake(),
        sealing=_sealing(),
        complaints=_complaints(),
        # The campaign pages are another feature's; link to them when they exist.
        campaign_link=(
            "admin.campaign_detail"
            if "admin.campaign_detail" in current_app.view_functions
            else None
        ),
    )
