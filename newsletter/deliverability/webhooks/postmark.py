"""Postmark bounce and spam-complaint webhooks.

Postmark signs nothing; its documented protection is HTTP Basic credentials
written into the webhook URL (``https://user:password@host/webhooks/bounces/postmark``).
POSTMARK_WEBHOOK_USERNAME and POSTMARK_WEBHOOK_PASSWORD must both be set, and
the credentials are compared in constant time. One record per POST.

Bounce ``Type`` -> kind: HardBounce and BadEmailAddress are hard; SoftBounce,
Transient, DnsError, Blocked and SpamNotification (the receiving server
refused the content) are soft; AutoResponder is an auto-reply. A
``RecordType`` of SpamComplaint is a complaint. Anything else (Unsubscribe,
ManuallyDeactivated, delivery and open records ...) reports nothing.
The dedupe key is Postmark's record ``ID``.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping
from typing import Any

from ...models import BounceKind
from ..reports import IncomingReport
from .base import MAX_ADDRESS, Rejected, Verified, WebhookCall, diagnostic, load_json, mapping, when
from .base import text as field

SOURCE = "postmark"
BOUNCE_KINDS = {
    "HardBounce": BounceKind.HARD,
    "BadEmailAddress": BounceKind.HARD,
    "SoftBounce": BounceKind.SOFT,
    "Transient": BounceKind.SOFT,
    "DnsError": BounceKind.SOFT,
    "Blocked": BounceKind.SOFT,
    "SpamNotification": BounceKind.SOFT,
    "AutoResponder": BounceKind.AUTO_REPLY,
}


def authenticate(call: WebhookCall, settings: Mapping[str, Any]) -> Verified:
    """Check the Basic credentials; the payload is read only after they match."""
    username = settings.get("POSTMARK_WEBHOOK_USERNAME") or ""
    password = settings.get("POSTMARK_WEBHOOK_PASSWORD") or ""
    if not username or not password:
        raise Rejected(404, "postmark webhook not configured")
    expected = b"Basic " + base64.b64encode(f"{username}:{password}".encode())
    given = (call.header("Authorization") or "").encode("utf-8", "replace")
    if not hmac.compare_digest(given, expected):
        raise Rejected(401, "postmark credentials do not match")
    return Verified(load_json(call.body))


def parse(payload: Any) -> list[IncomingReport]:
    """The one record's report, if it is a bounce, auto-reply or complaint."""
    record = mapping(payload, "record")
    record_type = record.get("RecordType")
    if record_type == "SpamComplaint":
        kind: BounceKind | None = BounceKind.COMPLAINT
    elif record_type == "Bounce":
        bounce_type = record.get("Type")
        kind = BOUNCE_KINDS.get(bounce_type) if isinstance(bounce_type, str) else None
    else:
        kind = None
    if kind is None:
        return []
    record_id = record.get("ID")
    if isinstance(record_id, bool) or not isinstance(record_id, int | str):
        raise Rejected(400, "ID: missing")
    key = field(str(record_id), "ID")
    return [
        IncomingReport(
            kind=kind,
            source=SOURCE,
            dedupe_key=f"{record_type}:{key}",
            recipient=field(record.get("Email"), "Email", limit=MAX_ADDRESS),
            occurred_at=when(record.get("BouncedAt"), "BouncedAt"),
            diagnostic=diagnostic(record.get("Type"), record.get("Details")),
        )
    ]
