"""The links in mails: confirm, unsubscribe (incl. RFC 8058 one-click), manage.

GET never changes anything (mail scanners prefetch links); each page has one
button that POSTs back to the same URL. The signed token is the authorisation.
"""

from __future__ import annotations

from flask import current_app, g, render_template, request, url_for
from flask.typing import ResponseReturnValue

from ..ledger import evidence_from_request
from ..models import Channel, Subscriber, SubscriptionStatus
from ..privacy.data_export import request_data_export
from ..subscriptions import service
from ..subscriptions.lists import open_lists
from ..tokens import ExpiredToken, InvalidToken, Purpose, TokenPayload, make_token, payload_of
from ..tokens import read_token as _read
from ..validation import InvalidInput
from .forms import ManageForm
from .public import bp


def _invalid() -> ResponseReturnValue:
    return render_template("public/link_invalid.html"), 400


def _gone() -> ResponseReturnValue:
    return render_template("public/link_gone.html"), 404


def _use_subscriber_language(subscriber: Subscriber) -> None:
    g.locale = subscriber.locale


@bp.route("/confirm/<token>", methods=["GET", "POST"])
def confirm(token: str) -> ResponseReturnValue:
    """Show the confirm button (GET) or confirm (POST); expired links offer a new mail."""
    try:
        payload = _read(Purpose.CONFIRM, token, max_age=current_app.config["CONFIRM_MAX_AGE"])
    except InvalidToken:
        return _invalid()
    except ExpiredToken as expired:
        return _expired(payload_of(expired))
    try:
        subscriber = service.subscriber_for(payload)
    except service.UnknownSubscriber:
        return _gone()
    _use_subscriber_language(subscriber)
    if request.method == "GET":
        lists = [s.mailing_list for s in subscriber.subscriptions if s.list_id in payload.list_ids]
        return render_template("public/confirm.html", lists=lists)
    outcome = service.confirm(payload, evidence_from_request(request))
    return render_template(
        "public/confirmed.html", outcome=outcome, manage_url=_manage_url(payload)
    )


def _expired(payload: TokenPayload) -> ResponseReturnValue:
    """The expired-link page; its button asks for a fresh confirmation mail."""
    resent = False
    if request.method == "POST" and request.form.get("resend"):
        try:
            service.resend_confirmation(payload)
        except service.UnknownSubscriber:
            return _gone()
        resent = True
    return render_template("public/link_expired.html", resent=resent), 410


@bp.route("/unsubscribe/<token>", methods=["GET", "POST"])
def unsubscribe(token: str) -> ResponseReturnValue:
    """One button (GET) or unsubscribe at once (POST, also the RFC 8058 one-click target).

    The POST answers 200 and never redirects, with or without a cookie or form
    token; a second POST is harmless.
    """
    try:
        payload = _read(Purpose.UNSUBSCRIBE, token)
    except InvalidToken:
        return _invalid()
    try:
        subscriber = service.subscriber_for(payload)
    except service.UnknownSubscriber:
        # Nothing left to unsubscribe (erased): answer success, as RFC 8058 expects.
        if request.method == "POST":
            return render_template("public/unsubscribed.html", lists=[], manage_url=None)
        return _gone()
    _use_subscriber_language(subscriber)
    lists = [
        s.mailing_list
        for s in subscriber.subscriptions
        if not payload.list_ids or s.list_id in payload.list_ids
    ]
    if request.method == "GET":
        return render_template("public/unsubscribe.html", lists=lists)
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    channel = Channel.ONE_CLICK if one_click else Channel.UNSUBSCRIBE_PAGE
    service.unsubscribe(payload, channel, evidence_from_request(request))
    return render_template("public/unsubscribed.html", lists=lists, manage_url=_manage_url(payload))


def _manage_url(payload: TokenPayload) -> str:
    """A preference-page link for the same subscriber."""
    return url_for("public.manage", token=make_token(Purpose.MANAGE, payload.subscriber_key))


@bp.route("/manage/<token>", methods=["GET", "POST"])
def manage(token: str) -> ResponseReturnValue:
    """The preference page: lists, language, unsubscribe from all, a copy of my
    data and the proof of my consent (both by a link mailed to the address)."""
    try:
        payload = _read(Purpose.MANAGE, token)
    except InvalidToken:
        return _invalid()
    try:
        subscriber = service.subscriber_for(payload)
    except service.UnknownSubscriber:
        return _gone()
    _use_subscriber_language(subscriber)
    form = ManageForm(request.form)
    outcome = None
    if request.method == "POST" and form.action.data in ("export", "proof"):
        # The link is mailed to the address, never shown: see request_data_export.
        request_data_export(payload, proof=form.action.data == "proof")
        return _render_manage(subscriber, form, None, token=token, requested=form.action.data)
    if request.method == "POST":
        evidence = evidence_from_request(request)
        if form.action.data == "unsubscribe_all":
            service.unsubscribe(payload, Channel.MANAGE_PAGE, evidence)
        elif form.lists.process_errors:
            # Values that are not list ids (a slug, a typo) would otherwise read as
            # "nothing ticked" and withdraw every list: refuse, change nothing.
            form.lists.errors = ["Choose your lists with the boxes on this page."]
            return _render_manage(subscriber, form, None, token=token), 400
        else:
            try:
                outcome = service.update_preferences(
                    payload, set(form.lists.data or []), form.locale.data or None, evidence
                )
            except InvalidInput as exc:
                form.locale.errors = [exc.message]
                return _render_manage(subscriber, form, None, token=token), 400
    _use_subscriber_language(subscriber)
    return _render_manage(subscriber, form, outcome, token=token, saved=request.method == "POST")


def _render_manage(
    subscriber: Subscriber,
    form: ManageForm,
    outcome: service.PreferenceOutcome | None,
    *,
    token: str,
    saved: bool = False,
    requested: str | None = None,
) -> str:
    """The preference page with each open list's current status and the privacy
    actions; ``requested``: the link mail just asked for (``export`` or ``proof``)."""
    statuses = {s.list_id: s.status for s in subscriber.subscriptions}
    rows = [(m, statuses.get(m.id)) for m in open_lists()]
    return render_template(
        "public/manage.html",
        subscriber=subscriber,
        rows=rows,
        form=form,
        outcome=outcome,
        saved=saved,
        requested=requested,
        erase_url=url_for("privacy.erase", token=token),
        Status=SubscriptionStatus,
        languages=current_app.config["LANGUAGES"],
    )
