"""Amazon SES bounce and complaint notifications, delivered by Amazon SNS.

Every SNS message is signed: SignatureVersion 1 is SHA1withRSA and 2 is
SHA256withRSA, over the canonical string of the message's fields (name and
value, each followed by a newline, in the order SNS documents). The signing
certificate is never fetched: its ``SigningCertURL`` must be
``https://sns.<region>.amazonaws.com/<name>.pem`` and the certificate must be
pinned here, either in SES_SNS_CERTIFICATES (URL -> PEM) or as ``<name>.pem``
in SES_SNS_CERTIFICATE_DIR, and valid now. The ``TopicArn`` must be one of
SES_SNS_TOPIC_ARNS. The ``Timestamp`` must lie within WEBHOOK_MAX_AGE of now,
and a ``MessageId`` is accepted once.

A SubscriptionConfirmation is verified like any message; its SubscribeURL is
logged for the operator to open once (this server makes no outgoing calls).

In the SES notification (the ``Message``), a Bounce of bounceType Permanent is
hard, Transient or Undetermined soft, one report per bounced recipient; a
Complaint is a complaint per complained recipient, unless its feedback type is
``not-spam``. The dedupe key is the SES ``feedbackId`` and the recipient. The
mail's ``source`` is its envelope sender, our VERP address when we set one.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ...models import BounceKind
from ..reports import IncomingReport
from .base import (
    MAX_ADDRESS,
    Rejected,
    Verified,
    WebhookCall,
    check_age,
    diagnostic,
    load_json,
    mapping,
    part,
    when,
)
from .base import text as field

SOURCE = "ses"
log = logging.getLogger(__name__)

CERT_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
CERT_NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}\.pem")
HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}
# The fields each message type signs, in the order SNS documents.
SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
SIGNED_FIELDS["UnsubscribeConfirmation"] = SIGNED_FIELDS["SubscriptionConfirmation"]
OPTIONAL_FIELDS = frozenset({"Subject"})


def canonical_string(message: Mapping[str, Any]) -> bytes:
    """The bytes SNS signs for ``message`` (``Rejected(400)`` when a field is missing)."""
    kind = message.get("Type")
    if not isinstance(kind, str) or kind not in SIGNED_FIELDS:
        raise Rejected(400, "sns: unknown message type")
    lines = []
    for name in SIGNED_FIELDS[kind]:
        value = message.get(name)
        if value is None and name in OPTIONAL_FIELDS:
            continue
        if not isinstance(value, str):
            raise Rejected(400, f"sns: {name} missing")
        lines.append(f"{name}\n{value}\n")
    try:
        return "".join(lines).encode("utf-8")
    except UnicodeEncodeError:
        raise Rejected(400, "sns: lone surrogate") from None


def certificate_name(url: Any) -> str:
    """The file name of an acceptable SigningCertURL, or ``Rejected(403)``."""
    if not isinstance(url, str) or len(url) > 500:
        raise Rejected(403, "sns: no certificate URL")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise Rejected(403, "sns: certificate URL unreadable") from None
    name = parts.path.rsplit("/", 1)[-1]
    if (
        parts.scheme != "https"
        or port is not None
        or parts.username is not None
        or parts.password is not None
        or parts.netloc != parts.hostname
        or not CERT_HOST.fullmatch(parts.netloc)
        or parts.query
        or parts.fragment
        or parts.path != f"/{name}"
        or not CERT_NAME.fullmatch(name)
    ):
        raise Rejected(403, "sns: certificate URL is not an SNS address")
    return name


def pinned_certificate(url: Any, settings: Mapping[str, Any]) -> x509.Certificate:
    """The pinned certificate for ``url``; ``Rejected(403)`` when none is
    pinned or it is not valid now."""
    name = certificate_name(url)
    pem = part(settings.get("SES_SNS_CERTIFICATES")).get(url)
    directory = settings.get("SES_SNS_CERTIFICATE_DIR") or ""
    if pem is None and directory:
        path = Path(directory) / name
        if path.is_file():
            pem = path.read_text()
    if pem is None:
        raise Rejected(403, "sns: certificate not pinned")
    certificate = x509.load_pem_x509_certificate(str(pem).encode())
    now = datetime.now(UTC)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise Rejected(403, "sns: certificate not valid now")
    return certificate


def authenticate(call: WebhookCall, settings: Mapping[str, Any]) -> Verified:
    """Check the topic, the pinned certificate, the signature and the replay window."""
    topics = settings.get("SES_SNS_TOPIC_ARNS") or []
    if isinstance(topics, str):
        topics = topics.replace(",", " ").split()
    if not topics:
        raise Rejected(404, "ses webhook not configured")
    message = mapping(load_json(call.body), "message")
    if message.get("TopicArn") not in topics:
        raise Rejected(403, "sns: topic not allowed")
    signed = canonical_string(message)
    algorithm = HASHES.get(str(message.get("SignatureVersion")))
    if algorithm is None:
        raise Rejected(403, "sns: unknown signature version")
    certificate = pinned_certificate(message.get("SigningCertURL"), settings)
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise Rejected(403, "sns: certificate key is not RSA")
    try:
        signature = base64.b64decode(str(message.get("Signature") or ""), validate=True)
        key.verify(signature, signed, padding.PKCS1v15(), algorithm())
    except (binascii.Error, ValueError, InvalidSignature):
        raise Rejected(403, "sns: signature does not match") from None
    timestamp = when(message.get("Timestamp"), "Timestamp")
    if timestamp is None:
        raise Rejected(403, "sns: timestamp unreadable")
    check_age(timestamp.timestamp(), call, settings)
    message_id = field(message.get("MessageId"), "MessageId")
    return Verified(message, replay_key=f"{SOURCE}:{message_id}")


def parse(payload: Any) -> list[IncomingReport]:
    """The reports in an SNS Notification; a confirmation's URL is logged, nothing reported."""
    message = mapping(payload, "message")
    kind = message.get("Type")
    if kind in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        url = field(message.get("SubscribeURL"), "SubscribeURL")
        log.warning(
            "SNS %s for topic %s: open %s once to confirm",
            kind,
            field(message.get("TopicArn"), "TopicArn"),
            url,
        )
        return []
    notification = mapping(
        load_json(str(message.get("Message")).encode("utf-8", "surrogatepass")), "Message"
    )
    notification_type = notification.get("notificationType") or notification.get("eventType")
    mail = part(notification.get("mail"))
    verp = field(mail.get("source"), "source", limit=MAX_ADDRESS, required=False)
    if notification_type == "Bounce":
        return _bounces(mapping(notification.get("bounce"), "bounce"), verp)
    if notification_type == "Complaint":
        return _complaints(mapping(notification.get("complaint"), "complaint"), verp)
    return []


def _recipients(value: Any, field_name: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, list) or not value or len(value) > 1000:
        raise Rejected(400, f"{field_name}: not a list")
    return [mapping(item, field_name) for item in value]


def _bounces(bounce: Mapping[str, Any], verp: str | None) -> list[IncomingReport]:
    bounce_type = bounce.get("bounceType")
    kind = BounceKind.HARD if bounce_type == "Permanent" else BounceKind.SOFT
    feedback = field(bounce.get("feedbackId"), "feedbackId")
    occurred = when(bounce.get("timestamp"), "timestamp")
    reports = []
    for item in _recipients(bounce.get("bouncedRecipients"), "bouncedRecipients"):
        recipient = field(item.get("emailAddress"), "emailAddress", limit=MAX_ADDRESS)
        reports.append(
            IncomingReport(
                kind=kind,
                source=SOURCE,
                dedupe_key=f"bounce:{feedback}:{recipient}",
                recipient=recipient,
                verp=verp,
                occurred_at=occurred,
                diagnostic=diagnostic(
                    bounce_type,
                    bounce.get("bounceSubType"),
                    item.get("status"),
                    item.get("diagnosticCode"),
                ),
            )
        )
    return reports


def _complaints(complaint: Mapping[str, Any], verp: str | None) -> list[IncomingReport]:
    if complaint.get("complaintFeedbackType") == "not-spam":
        return []
    feedback = field(complaint.get("feedbackId"), "feedbackId")
    occurred = when(complaint.get("timestamp"), "timestamp")
    reports = []
    for item in _recipients(complaint.get("complainedRecipients"), "complainedRecipients"):
        recipient = field(item.get("emailAddress"), "emailAddress", limit=MAX_ADDRESS)
        reports.append(
            IncomingReport(
                kind=BounceKind.COMPLAINT,
                source=SOURCE,
                dedupe_key=f"complaint:{feedback}:{recipient}",
                recipient=recipient,
                verp=verp,
                occurred_at=occurred,
                diagnostic=diagnostic(
                    "complaint", complaint.get("complaintFeedbackType"), complaint.get("userAgent")
                ),
            )
        )
    return reports
