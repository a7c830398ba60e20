"""POST /api/v1/subscriptions: JSON signup for scripts and the static site's enhancement."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import force_locale
from werkzeug.exceptions import HTTPException

from ..extensions import limiter
from ..ledger import evidence_from_request
from ..models import Channel
from ..subscriptions.intake import SignupRequest, accept_signup, signal_arrival
from ..urls import base_url
from ..validation import InvalidInput, require_encodable
from .origin import cors_origin, origin_allowed
from .signup import signup_rate_limit

bp = Blueprint("api", __name__, url_prefix="/api/v1")

FIELDS = {"email": str, "name": str, "lists": list, "locale": str}


def _error(status: int, message: str, field: str | None = None) -> ResponseReturnValue:
    body: dict[str, Any] = {"error": message}
    if field:
        body["field"] = field
    return jsonify(body), status


@bp.route("/subscriptions", methods=["OPTIONS"])
def preflight() -> ResponseReturnValue:
    """CORS preflight: allowed only for ALLOWED_ORIGINS."""
    return Response(status=204 if cors_origin() else 403)


@bp.post("/subscriptions")
@limiter.limit(signup_rate_limit)
def create_subscription() -> ResponseReturnValue:
    """Accept a signup; 202 whatever the address's state (no enumeration)."""
    if not origin_allowed(required=False):
        return _error(403, "This origin may not sign people up.")
    if not request.is_json:
        return _error(415, "Send JSON with Content-Type: application/json.")
    try:
        data = request.get_json(silent=True)
    except RecursionError:
        # Deeply nested JSON ("[[[[...") exhausts the parser's recursion:
        # bad input, not a server error.
        data = None
    if not isinstance(data, dict):
        return _error(400, "The body is not a JSON object.")
    for name, kind in FIELDS.items():
        value = data.get(name)
        if value is not None and not isinstance(value, kind):
            return _error(422, f"'{name}' must be a {kind.__name__}.", name)
        try:
            require_encodable(value, name)
        except InvalidInput as exc:
            return _error(400, exc.message, exc.field)
    if not data.get("email"):
        return _error(422, "'email' is required.", "email")
    try:
        # The API speaks English whatever the Accept-Language (clients show
        # their own texts; see docs/embedding.md), so service messages too.
        with force_locale("en"):
            accept_signup(
                SignupRequest(
                    email=data["email"],
                    name=data.get("name"),
                    list_slugs=list(data.get("lists") or []),
                    locale=data.get("locale"),
                    channel=Channel.API,
                    evidence=evidence_from_request(request),
                    lists_field="lists",
                )
            )
    except InvalidInput as exc:
        return _error(422, exc.message, exc.field)
    signal_arrival()
    return jsonify(status="accepted", message="Check your inbox to confirm."), 202


@bp.errorhandler(HTTPException)
def json_error(exc: HTTPException) -> ResponseReturnValue:
    """Errors in the API are JSON too (413 too large, 429 too many requests ...)."""
    return _error(exc.code or 500, exc.description or exc.name)


@bp.after_request
def cors_headers(response: Response) -> Response:
    """Let ALLOWED_ORIGINS call the API from the browser; nobody else."""
    # Every signup form links to the privacy policy; an API client finds the link
    # here (RFC 6903 "privacy-policy" relation) to show beside its own form.
    # The link is on BASE_URL: the request's Host is anyone's to choose.
    policy = base_url() + url_for("privacy.policy_in_force")
    response.headers["Link"] = f'<{policy}>; rel="privacy-policy"'
    origin = cors_origin()
    if origin:
        response.headers["Access-Control-Expose-Headers"] = "Link"
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type"
        response.headers["Access-Control-Max-Age"] = "600"
        response.headers["Vary"] = "Origin"
    return response
