"""Bounce and complaint webhooks: ``POST /webhooks/bounces/<provider>``.

Machine endpoints for Postmark, Mailgun, SendGrid and Amazon SES (SNS). Each
call is authenticated its provider's way (deliverability.webhooks), so there
is no CSRF token and no Origin check: neither applies to a server calling
us, and these routes read and set no cookie. The body may be up to
WEBHOOK_MAX_BYTES (413 beyond). A call that is not authenticated, or whose
payload does not parse, is refused with a 4xx before anything is written;
otherwise each report is recorded (deliverability.reports.record_report,
idempotent by the event's id) and the answer is 200 with counts. A provider
that is not configured here is 404, like an unknown one.
"""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from ..deliverability.reports import record_report
from ..deliverability.webhooks import PROVIDERS, Rejected, ReplayMemory, WebhookCall
from ..extensions import csrf

bp = Blueprint("webhooks", __name__)
# Exempt by name, so the routes stay free of CSRF checks even where every POST
# is checked by default (WTF_CSRF_CHECK_DEFAULT).
csrf.exempt(bp)
log = logging.getLogger(__name__)


@bp.before_request
def _body_limit() -> None:
    """Providers batch events: allow WEBHOOK_MAX_BYTES instead of the forms' limit."""
    request.max_content_length = int(current_app.config["WEBHOOK_MAX_BYTES"])


def _replay_memory() -> ReplayMemory:
    memory = current_app.extensions.get("bounce_webhook_replays")
    if memory is None:
        memory = current_app.extensions.setdefault("bounce_webhook_replays", ReplayMemory())
    return memory


def _refuse(provider: str, rejected: Rejected) -> Response:
    log.warning("webhook %r refused (%s): %s", provider[:40], rejected.status, rejected.reason)
    response = jsonify(error="refused")
    response.status_code = rejected.status
    if rejected.status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="bounce webhook"'
    return response


@bp.post("/webhooks/bounces/<provider>")
def receive(provider: str) -> ResponseReturnValue:
    """Authenticate, parse, and record every report of one provider call."""
    module = PROVIDERS.get(provider)
    if module is None:
        return _refuse(provider, Rejected(404, "unknown provider"))
    call = WebhookCall(
        headers={k.lower(): v for k, v in request.headers.items()},
        body=request.get_data(cache=False),
        now=time.time(),
    )
    try:
        verified = module.authenticate(call, current_app.config)
        memory = _replay_memory()
        if verified.replay_key and memory.seen(verified.replay_key, call.now):
            return jsonify(reports=0, recorded=0, replayed=True)
        reports = module.parse(verified.payload)
    except Rejected as rejected:
        return _refuse(provider, rejected)
    recorded = sum(not record_report(report).duplicate for report in reports)
    if verified.replay_key:
        # After the reports are recorded: a call that failed may be retried.
        ttl = 2 * float(current_app.config["WEBHOOK_MAX_AGE"])
        memory.remember(verified.replay_key, ttl, call.now)
    return jsonify(reports=len(reports), recorded=recorded, replayed=False)
