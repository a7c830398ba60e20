"""Staff console: one subscriber. Profile, consent timeline, mails sent, proof of
consent (JSON, printable with each event's verification status, and the
bundle for newsletter-verify), manual unsubscribe and erasure."""

from __future__ import annotations

import json

from flask import Response, abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _

from ..ledger import evidence_from_request
from ..ledger.proof import NothingSealed
from ..models import Channel, Role, SubscriptionStatus, utcnow
from ..privacy.erasure import UnknownSubscriber, erase_subscriber
from ..privacy.withdrawal import withdraw_by_staff
from ..reports.subscriber import (
    SubscriberReport,
    proof_bundle,
    proof_document,
    proof_status,
    subscriber_report,
)
from ..subscriptions.withdrawal import WITHDRAWABLE
from . import bp
from .access import client_ip, requires, staff
from .forms import ConfirmForm
from .subscriber_forms import ALL_LISTS, EraseForm, UnsubscribeForm


def _report_or_404(subscriber_id: int) -> SubscriberReport:
    """The subscriber's report, or 404 (unknown or erased)."""
    report = subscriber_report(subscriber_id)
    if report is None:
        abort(404)
    return report


def _unsubscribe_form(report: SubscriberReport) -> UnsubscribeForm:
    """The unsubscribe form, offering the lists the person can still leave."""
    form = UnsubscribeForm()
    leavable = [s for s in report.subscriber.subscriptions if s.status in WITHDRAWABLE]
    form.list.choices = [(ALL_LISTS, _("Every list"))] + [
        (str(s.list_id), s.mailing_list.name) for s in leavable
    ]
    return form


@bp.route("/subscribers/<id:subscriber_id>")
@requires(Role.VIEWER)
def subscriber_detail(subscriber_id: int) -> ResponseReturnValue:
    """Profile, subscriptions, consent timeline and the mails sent."""
    report = _report_or_404(subscriber_id)
    return render_template(
        "admin/subscriber_detail.html",
        report=report,
        subscriber=report.subscriber,
        unsubscribe_form=_unsubscribe_form(report),
        may_edit=staff().may(Role.EDITOR),
        can_leave=any(s.status in WITHDRAWABLE for s in report.subscriber.subscriptions),
        statuses=SubscriptionStatus,
        bundle_form=ConfirmForm(),
    )


@bp.route("/subscribers/<id:subscriber_id>/proof.json")
@requires(Role.VIEWER)
def subscriber_proof_json(subscriber_id: int) -> ResponseReturnValue:
    """The proof of consent as a JSON download (the same as `newsletter consent proof`)."""
    document = proof_document(subscriber_id, actor=staff(), ip=client_ip(), form="json")
    if document is None:
        abort(404)
    body = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    response = Response(body, mimetype="application/json")
    name = f"consent-proof-subscriber-{subscriber_id}.json"
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/subscribers/<id:subscriber_id>/proof")
@requires(Role.VIEWER)
def subscriber_proof(subscriber_id: int) -> ResponseReturnValue:
    """The proof of consent as a printable page, with each event's verification
    status against the latest checkpoint (see ledger.status)."""
    document = proof_document(subscriber_id, actor=staff(), ip=client_ip(), form="print")
    if document is None:
        abort(404)
    response = Response(
        render_template(
            "admin/subscriber_proof.html",
            proof=document,
            status=proof_status(document),
            subscriber_id=subscriber_id,
            now=utcnow().strftime("%Y-%m-%d %H:%M"),
            bundle_form=ConfirmForm(),
        )
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/subscribers/<id:subscriber_id>/proof-bundle.json", methods=["POST"])
@requires(Role.VIEWER)
def subscriber_proof_bundle(subscriber_id: int) -> ResponseReturnValue:
    """The consent proof bundle (what `newsletter consent proof --bundle` writes),
    after sealing what waits. A POST (the blueprint checks its CSRF token): it
    seals the ledger."""
    try:
        bundle = proof_bundle(subscriber_id, actor=staff(), ip=client_ip())
    except NothingSealed:
        flash(_("No checkpoint has been signed yet: the bundle cannot be made."), "error")
        return redirect(url_for("admin.subscriber_proof", subscriber_id=subscriber_id))
    if bundle is None:
        abort(404)
    body = json.dumps(bundle, indent=2, ensure_ascii=False) + "\n"
    response = Response(body, mimetype="application/json")
    name = f"consent-proof-bundle-subscriber-{subscriber_id}.json"
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/subscribers/<id:subscriber_id>/unsubscribe", methods=["POST"])
@requires(Role.EDITOR)
def subscriber_unsubscribe(subscriber_id: int) -> ResponseReturnValue:
    """Withdraw consent on the person's behalf (channel ``staff`` in the ledger)."""
    report = _report_or_404(subscriber_id)
    form = _unsubscribe_form(report)
    if not form.validate_on_submit():
        flash(_("Choose a list to unsubscribe from."), "error")
        return redirect(url_for("admin.subscriber_detail", subscriber_id=subscriber_id))
    list_ids = None if form.list.data == ALL_LISTS else {int(str(form.list.data))}
    left = withdraw_by_staff(
        subscriber_id,
        list_ids=list_ids,
        actor=staff(),
        evidence=evidence_from_request(request),
        ip=client_ip(),
    )
    if left:
        names = ", ".join(m.name for m in left)
        flash(_("Unsubscribed from: %(lists)s.", lists=names), "success")
    else:
        flash(_("Nothing to change: not subscribed there."), "info")
    return redirect(url_for("admin.subscriber_detail", subscriber_id=subscriber_id))


@bp.route("/subscribers/<id:subscriber_id>/erase", methods=["GET", "POST"])
@requires(Role.EDITOR)
def subscriber_erase(subscriber_id: int) -> ResponseReturnValue:
    """Erasure with a confirm step: a page that says what happens, then a ticked box."""
    report = _report_or_404(subscriber_id)
    form = EraseForm()
    if form.validate_on_submit():
        try:
            erase_subscriber(
                subscriber_id,
                channel=Channel.STAFF,
                actor=staff(),
                evidence=evidence_from_request(request),
                ip=client_ip(),
            )
        except UnknownSubscriber:
            abort(404)
        flash(_("Subscriber #%(id)s is erased.", id=subscriber_id), "success")
        return redirect(url_for("admin.subscribers"))
    return render_template("admin/subscriber_erase.html", subscriber=report.subscriber, form=form)
