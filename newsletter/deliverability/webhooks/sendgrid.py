"""SendGrid's Signed Event Webhook.

SendGrid signs the timestamp header followed by the raw body with ECDSA
(P-256, SHA-256); the signature (DER, base64) comes in
``X-Twilio-Email-Event-Webhook-Signature`` and the timestamp in
``X-Twilio-Email-Event-Webhook-Timestamp``. SENDGRID_WEBHOOK_PUBLIC_KEY is the
verification key SendGrid shows (base64 DER) or the same key as PEM. The
timestamp must lie within WEBHOOK_MAX_AGE of now; a signature is accepted once.

Events (a JSON array): ``bounce`` is hard, unless its ``type`` is ``blocked``
(a temporary refusal: soft); ``dropped`` for a ``Bounced Address`` or an
``Invalid`` address is hard and for a ``Spam Reporting Address`` a complaint
(other drops report nothing); ``deferred`` is soft, once per message and
recipient (SendGrid reports every retry); ``spamreport`` is a complaint. The
dedupe key is ``sg_event_id``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

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
    when,
)
from .base import text as field

SOURCE = "sendgrid"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
MAX_EVENTS = 10_000
DROPPED_KINDS = {
    "Bounced Address": BounceKind.HARD,
    "Invalid": BounceKind.HARD,
    "Spam Reporting Address": BounceKind.COMPLAINT,
}


def public_key(setting: str) -> ec.EllipticCurvePublicKey:
    """The verification key from the setting (PEM, or SendGrid's base64 DER)."""
    try:
        if "-----BEGIN" in setting:
            key = load_pem_public_key(setting.encode())
        else:
            key = load_der_public_key(base64.b64decode("".join(setting.split()), validate=True))
    except (ValueError, binascii.Error, UnsupportedAlgorithm) as exc:
        raise ValueError("SENDGRID_WEBHOOK_PUBLIC_KEY is not a public key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("SENDGRID_WEBHOOK_PUBLIC_KEY is not a P-256 key")
    return key


def authenticate(call: WebhookCall, settings: Mapping[str, Any]) -> Verified:
    """Check the ECDSA signature over timestamp + body, and the replay window."""
    setting = settings.get("SENDGRID_WEBHOOK_PUBLIC_KEY") or ""
    if not setting:
        raise Rejected(404, "sendgrid webhook not configured")
    key = public_key(str(setting))  # a bad setting is the operator's error: a 500 says so
    signature = call.header(SIGNATURE_HEADER) or ""
    timestamp = call.header(TIMESTAMP_HEADER) or ""
    if not signature or not timestamp or not timestamp.isascii():
        raise Rejected(403, "sendgrid signature headers missing")
    try:
        der = base64.b64decode(signature, validate=True)
        key.verify(der, timestamp.encode() + call.body, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, InvalidSignature):
        raise Rejected(403, "sendgrid signature does not match") from None
    try:
        signed_at = epoch(timestamp, "timestamp")
    except Rejected:
        raise Rejected(403, "sendgrid timestamp unreadable") from None
    check_age(signed_at, call, settings)
    return Verified(load_json(call.body), replay_key=f"{SOURCE}:{base64.b64encode(der).decode()}")


def parse(payload: Any) -> list[IncomingReport]:
    """The reports among the events, in their order."""
    if not isinstance(payload, list) or len(payload) > MAX_EVENTS:
        raise Rejected(400, "events: not a list")
    reports = []
    for index, item in enumerate(payload):
        report = _report(mapping(item, f"event {index}"))
        if report is not None:
            reports.append(report)
    return reports


def _report(event: Mapping[str, Any]) -> IncomingReport | None:
    name = event.get("event")
    kind: BounceKind | None
    if name == "bounce":
        kind = BounceKind.SOFT if event.get("type") == "blocked" else BounceKind.HARD
    elif name == "dropped":
        reason = event.get("reason")
        kind = DROPPED_KINDS.get(reason) if isinstance(reason, str) else None
    elif name == "deferred":
        kind = BounceKind.SOFT
    elif name == "spamreport":
        kind = BounceKind.COMPLAINT
    else:
        kind = None
    if kind is None:
        return None
    recipient = field(event.get("email"), "email", limit=MAX_ADDRESS)
    if name == "deferred":
        message = field(event.get("sg_message_id"), "sg_message_id", required=False)
        key = f"deferred:{message or field(event.get('sg_event_id'), 'sg_event_id')}:{recipient}"
    else:
        key = f"{name}:{field(event.get('sg_event_id'), 'sg_event_id')}"
    return IncomingReport(
        kind=kind,
        source=SOURCE,
        dedupe_key=key,
        recipient=recipient,
        occurred_at=when(event.get("timestamp"), "timestamp"),
        diagnostic=diagnostic(event.get("status"), event.get("reason") or event.get("response")),
    )
