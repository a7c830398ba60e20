"""Data protection pages: the privacy policy, the data-copy and consent-proof
downloads, "Erase me".

Like every public page these set no cookie. The download and erasure pages
follow the links' rule: GET shows a page with one button and changes or hands
out nothing (mail scanners prefetch links); the POST does the work.
"""

from __future__ import annotations

import json
from contextlib import suppress
from typing import Any

from flask import Blueprint, Response, current_app, g, render_template, request
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from werkzeug.exceptions import ServiceUnavailable

from ..ledger import evidence_from_request
from ..ledger.proof import NothingSealed, consent_bundle
from ..ledger.status import seal_for_proof
from ..models import Channel, PolicyVersion, Subscriber
from ..privacy import policy
from ..privacy.data_export import request_data_export, subscriber_data_export
from ..privacy.erasure import UnknownSubscriber, erase_subscriber
from ..subscriptions import service
from ..tokens import ExpiredToken, InvalidToken, Purpose, TokenPayload, payload_of, read_token

bp = Blueprint("privacy", __name__)


@bp.get("/privacy")
def policy_in_force() -> ResponseReturnValue:
    """The privacy policy in force today; 404 before the first import."""
    current = policy.policy_in_force()
    if current is None:
        return render_template("public/privacy.html", policy=None, versions=[]), 404
    return _render_policy(current)


@bp.get("/privacy/<id:version>")
def policy_version(version: int) -> ResponseReturnValue:
    """One version of the policy, earlier, current or announced."""
    found = policy.policy_by_version(version)
    if found is None:
        return render_template("public/privacy.html", policy=None, versions=[]), 404
    return _render_policy(found)


def _render_policy(shown: PolicyVersion) -> str:
    """The policy with its dates, and the list of every version."""
    versions = policy.policy_versions()
    current = policy.policy_in_force()
    # A version is in force until the next one by effective date takes over.
    later = [
        v for v in versions if (v.effective_on, v.version) > (shown.effective_on, shown.version)
    ]
    replaced_on = min((v.effective_on for v in later), default=None)
    return render_template(
        "public/privacy.html",
        policy=shown,
        body=policy.render_policy(shown),
        versions=versions,
        current=current,
        replaced_on=replaced_on,
        upcoming=current is None or shown.effective_on > current.effective_on,
    )


def _language_of(payload: TokenPayload) -> Subscriber | None:
    """The subscriber a link names, with their language for the page; None if erased."""
    try:
        subscriber = service.subscriber_for(payload)
    except service.UnknownSubscriber:
        return None
    g.locale = subscriber.locale
    return subscriber


@bp.route("/data/<token>", methods=["GET", "POST"])
def data_export(token: str) -> ResponseReturnValue:
    """A page with two download buttons (GET); a JSON file (POST): the copy of
    the person's data, or with ``download=proof`` the consent proof bundle.

    Both are made after sealing what waits, so they include the newest events.
    An expired link offers a fresh one by mail (POST with ``resend``).
    """
    max_age = int(current_app.config["DATA_EXPORT_MAX_AGE"])
    try:
        payload = read_token(Purpose.DATA_EXPORT, token, max_age=max_age)
    except InvalidToken:
        return render_template("public/link_invalid.html"), 400
    except ExpiredToken as expired:
        return _export_expired(payload_of(expired))
    subscriber = _language_of(payload)
    if subscriber is None:
        return render_template("public/link_gone.html"), 404
    if request.method == "GET":
        return render_template("public/data_export.html", state="ready")
    seal_for_proof()
    if request.form.get("download") == "proof":
        return _consent_proof(subscriber.email)
    document = subscriber_data_export(subscriber.id)
    return _attachment(document, f"my-data-{document['generated_at'][:10]}.json")


def _consent_proof(address: str) -> ResponseReturnValue:
    """The consent proof bundle as a file (503 when nothing could be sealed yet)."""
    try:
        bundle = consent_bundle(address)
    except NothingSealed:
        error = ServiceUnavailable(
            _("The proof cannot be made just now. Please try again in a moment.")
        )
        return render_template("public/error.html", error=error), 503
    return _attachment(bundle, f"consent-proof-{bundle['created_at'][:10]}.json")


def _attachment(document: dict[str, Any], filename: str) -> Response:
    """A JSON document as a download."""
    return Response(
        json.dumps(document, indent=2, ensure_ascii=False) + "\n",
        mimetype="application/json",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _export_expired(payload: TokenPayload) -> ResponseReturnValue:
    """The expired-link page; its button mails a fresh link (rate-limited)."""
    if _language_of(payload) is None:
        return render_template("public/link_gone.html"), 404
    state = "expired"
    if request.method == "POST" and request.form.get("resend"):
        request_data_export(payload)
        state = "resent"
    return render_template("public/data_export.html", state=state), 410


@bp.route("/manage/<token>/erase", methods=["GET", "POST"])
def erase(token: str) -> ResponseReturnValue:
    """The confirm step of "Erase me" (GET), and the erasure itself (POST)."""
    try:
        payload = read_token(Purpose.MANAGE, token)
    except InvalidToken:
        return render_template("public/link_invalid.html"), 400
    subscriber = _language_of(payload)
    if subscriber is None:
        # Nothing left to erase: say so plainly, as after a successful erasure.
        return render_template("public/erased.html", already=True), 404
    if request.method == "GET" or request.form.get("erase") != "yes":
        return render_template("public/erase.html", email=subscriber.email)
    # A second click, or a concurrent erasure, finds nothing left: the data is gone.
    with suppress(UnknownSubscriber):
        erase_subscriber(
            subscriber.id,
            channel=Channel.MANAGE_PAGE,
            actor=None,
            evidence=evidence_from_request(request),
        )
    return render_template("public/erased.html", already=False)


@bp.after_request
def no_store(response: Response) -> Response:
    """Pages behind a data-export link must not be cached anywhere (the JSON least of all)."""
    if request.path.startswith("/data/"):
        response.headers["Cache-Control"] = "no-store"
    return response
