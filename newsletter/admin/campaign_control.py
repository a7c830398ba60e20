"""The campaign page's buttons: test mail, start or schedule, pause, resume,
cancel, public; and the progress numbers the page polls.

Each button is a POST (the blueprint checks its CSRF token) that calls one
service function and returns to the campaign page with a message.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import flash, jsonify, redirect, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import get_locale, pgettext
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel.speaklater import LazyString

from ..campaigns import service
from ..models import Role
from . import bp
from .access import client_ip, requires, staff
from .campaign_forms import ScheduleForm
from .campaigns import detail_page, loaded


def _back(campaign_id: int) -> ResponseReturnValue:
    """To the campaign page."""
    return redirect(url_for("admin.campaign_detail", campaign_id=campaign_id))


@bp.route("/campaigns/<id:campaign_id>/test", methods=["POST"])
@requires(Role.EDITOR)
def campaign_test(campaign_id: int) -> ResponseReturnValue:
    """Queue a test mail to oneself; the worker sends it like every mail."""
    loaded(campaign_id)
    me = staff()
    # Its layout in the language this console is shown in, like the preview.
    if service.queue_test_mail(campaign_id, me, locale=str(get_locale()), ip=client_ip()):
        flash(_("A test mail to %(email)s is on its way.", email=me.email), "success")
    else:
        flash(_("A test mail to %(email)s is still waiting to be sent.", email=me.email), "info")
    return _back(campaign_id)


@bp.route("/campaigns/<id:campaign_id>/start", methods=["POST"])
@requires(Role.EDITOR)
def campaign_start(campaign_id: int) -> ResponseReturnValue:
    """Start now, or schedule when a time (UTC) is given."""
    campaign = loaded(campaign_id)
    form = ScheduleForm()
    if not form.validate():
        return detail_page(campaign, schedule=form), 400
    when = form.when()
    try:
        result = service.start_campaign(campaign_id, when, actor=staff(), ip=client_ip())
    except service.CampaignStateError:
        flash(
            _("This campaign cannot be started: it is %(s)s.", s=state_label(campaign.status)),
            "error",
        )
    else:
        if result.scheduled and result.scheduled_at is not None:
            at = result.scheduled_at.strftime("%Y-%m-%d %H:%M")
            flash(_("The campaign is scheduled for %(at)s UTC.", at=at), "success")
        else:
            flash(_("Sending has started: %(n)s recipients queued.", n=result.queued), "success")
    return _back(campaign_id)


def state_label(status: str) -> str:
    """A campaign status in the page's language: the words templates/_labels.html uses
    (msgctxt "state"), so the catalogue already holds them."""
    return pgettext("state", str(status))


# The three state changes: the service that makes each, what the page says when
# it happened, and what it says when the campaign's state refused it.
STATE_CHANGES: dict[str, tuple[Callable[..., None], LazyString, LazyString]] = {
    "pause": (
        service.pause_campaign,
        _l("The campaign is paused."),
        _l("This campaign cannot be paused: it is %(s)s."),
    ),
    "resume": (
        service.resume_campaign,
        _l("The campaign continues."),
        _l("This campaign cannot be resumed: it is %(s)s."),
    ),
    "cancel": (
        service.cancel_campaign,
        _l("The campaign is cancelled."),
        _l("This campaign cannot be cancelled: it is %(s)s."),
    ),
}


def _state_change(name: str) -> Callable[[int], ResponseReturnValue]:
    """The view for one state change: call its service, say what happened, go back.

    Pause stops handing out batches (the batch in flight finishes), resume
    continues where it stopped, cancel stops for good (what is queued is not sent).
    """
    action, done, refused = STATE_CHANGES[name]

    def view(campaign_id: int) -> ResponseReturnValue:
        campaign = loaded(campaign_id)
        try:
            action(campaign_id, actor=staff(), ip=client_ip())
        except service.CampaignStateError:
            flash(str(refused) % {"s": state_label(campaign.status)}, "error")
        else:
            flash(str(done), "success")
        return _back(campaign_id)

    view.__name__ = view.__qualname__ = f"campaign_{name}"
    return requires(Role.EDITOR)(view)


for _name in STATE_CHANGES:
    bp.add_url_rule(
        f"/campaigns/<id:campaign_id>/{_name}",
        endpoint=f"campaign_{_name}",
        view_func=_state_change(_name),
        methods=["POST"],
    )


@bp.route("/campaigns/<id:campaign_id>/public", methods=["POST"])
@requires(Role.EDITOR)
def campaign_public(campaign_id: int) -> ResponseReturnValue:
    """Show in the public archive (``public=1``) or hide (anything else)."""
    loaded(campaign_id)
    public = request.form.get("public") == "1"
    service.set_public(campaign_id, public, actor=staff(), ip=client_ip())
    if public:
        flash(_("The campaign is public: it appears in the archive once sent."), "success")
    else:
        flash(_("The campaign is no longer in the public archive."), "success")
    return _back(campaign_id)


@bp.route("/campaigns/<id:campaign_id>/progress.json")
@requires(Role.VIEWER)
def campaign_progress_json(campaign_id: int) -> ResponseReturnValue:
    """Counts, rate and ETA for the live progress bar."""
    loaded(campaign_id)
    progress = service.campaign_progress(campaign_id)
    data = progress.as_dict()
    data["remaining"] = progress.queued
    data["done"] = progress.total - progress.queued
    response = jsonify(data)
    response.headers["Cache-Control"] = "no-store"
    return response
