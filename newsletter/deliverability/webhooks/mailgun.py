"""Mailgun webhooks (the JSON kind: ``signature`` and ``event-data``).

Mailgun signs ``timestamp`` + ``token`` with HMAC-SHA256 under the webhook
signing key (MAILGUN_WEBHOOK_SIGNING_KEY), the signature in hex. The
timestamp must lie within WEBHOOK_MAX_AGE of now, and a token is accepted
once (see ``Verified.replay_key``). Mailgun's signature covers the timestamp
and token only, not ``event-data``: what keeps a captured signature from
carrying other events is HTTPS, the replay window and the one-time token.

``failed`` with severity ``permanent`` is a hard bounce, ``temporary`` a soft
one; ``complained`` is a complaint; other events report nothing. The dedupe
key is the event ``id``, except for temporary failures: Mailgun reports one
for every retry of the same mail, and they count as one soft bounce, keyed by
the message id and recipient.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from ...models import BounceKind
from ..reports import IncomingReport
from .base import (
    MAX_ADDRESS,
    Rejected,
    Verified,
    WebhookCall,
    check_age,
    diagnostic,
    epoch,
    load_json,
    mapping,
    part,
    when,
)
from .base import text as field

SOURCE = "mailgun"


def authenticate(call: WebhookCall, settings: Mapping[str, Any]) -> Verified:
    """Check the HMAC over timestamp + token and the replay window."""
    key = settings.get("MAILGUN_WEBHOOK_SIGNING_KEY") or ""
    if not key:
        raise Rejected(404, "mailgun webhook not configured")
    payload = mapping(load_json(call.body), "body")
    signature = mapping(payload.get("signature"), "signature")
    timestamp = signature.get("timestamp")
    token = signature.get("token")
    given = signature.get("signature")
    if not all(isinstance(v, str) and v.isascii() for v in (timestamp, token, given)):
        raise Rejected(403, "mailgun signature fields missing")
    expected = hmac.new(
        str(key).encode(), f"{timestamp}{token}".encode(), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, str(given).lower()):
        raise Rejected(403, "mailgun signature does not match")
    check_age(epoch(timestamp, "timestamp"), call, settings)
    return Verified(payload, replay_key=f"{SOURCE}:{token}")


def parse(payload: Any) -> list[IncomingReport]:
    """The report of the one event in ``event-data``, if it is a failure or complaint."""
    event = mapping(mapping(payload, "body").get("event-data"), "event-data")
    name = event.get("event")
    severity = event.get("severity")
    if name == "complained":
        kind = BounceKind.COMPLAINT
    elif name == "failed" and severity == "permanent":
        kind = BounceKind.HARD
    elif name == "failed" and severity == "temporary":
        kind = BounceKind.SOFT
    else:
        return []
    recipient = field(event.get("recipient"), "recipient", limit=MAX_ADDRESS)
    headers = part(part(event.get("message")).get("headers"))
    if kind == BounceKind.SOFT:
        message_id = field(headers.get("message-id"), "message-id", required=False)
        key = f"temporary:{message_id or field(event.get('id'), 'id')}:{recipient}"
    else:
        key = f"{name}:{field(event.get('id'), 'id')}"
    envelope = part(event.get("envelope"))
    status = part(event.get("delivery-status"))
    return [
        IncomingReport(
            kind=kind,
            source=SOURCE,
            dedupe_key=key,
            recipient=recipient,
            verp=field(envelope.get("sender"), "sender", limit=MAX_ADDRESS, required=False),
            occurred_at=when(event.get("timestamp"), "timestamp"),
            diagnostic=diagnostic(
                status.get("code"), status.get("description") or status.get("message")
            ),
        )
    ]
