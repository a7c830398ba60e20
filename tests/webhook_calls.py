"""Signed provider calls for the bounce-webhook tests: each provider's documented
sample payload (tests/data/webhooks, see SOURCES.md), signed the provider's way
with keys made here (a P-256 key for SendGrid, an RSA key and a self-signed
certificate for SNS, an HMAC key for Mailgun, Basic credentials for Postmark)."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from newsletter.deliverability.webhooks.ses import canonical_string

DATA = Path(__file__).parent / "data" / "webhooks"
POSTMARK_USER = "postmark-hook"
POSTMARK_PASSWORD = "a-long-random-webhook-password-0123456789"
MAILGUN_KEY = "key-webhook-signing-0123456789abcdef"
TOPIC = "arn:aws:sns:us-west-2:123456789012:MyTopic"
CERT_URL = (
    "https://sns.us-west-2.amazonaws.com/"
    "SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem"
)


def sample(name: str) -> Any:
    """A documented sample payload, freshly loaded."""
    return json.loads((DATA / name).read_text())


@cache
def sendgrid_key() -> ec.EllipticCurvePrivateKey:
    """The test's SendGrid signing key (P-256)."""
    return ec.generate_private_key(ec.SECP256R1())


def sendgrid_public_key() -> str:
    """The verification key as SendGrid shows it: base64 of the DER public key."""
    der = (
        sendgrid_key()
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(der).decode()


@cache
def sns_key() -> rsa.RSAPrivateKey:
    """The test's SNS signing key."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def certificate_pem(
    key: rsa.RSAPrivateKey | None = None, *, valid_from: datetime | None = None, days: int = 30
) -> str:
    """A self-signed certificate for ``key`` (the SNS key by default)."""
    key = key or sns_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    start = valid_from or datetime.now(UTC) - timedelta(days=1)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def settings(**overrides: Any) -> dict[str, Any]:
    """Webhook settings with every provider configured (the app's defaults for the rest)."""
    values: dict[str, Any] = {
        "WEBHOOK_MAX_AGE": 300,
        "POSTMARK_WEBHOOK_USERNAME": POSTMARK_USER,
        "POSTMARK_WEBHOOK_PASSWORD": POSTMARK_PASSWORD,
        "MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_KEY,
        "SENDGRID_WEBHOOK_PUBLIC_KEY": sendgrid_public_key(),
        "SES_SNS_TOPIC_ARNS": [TOPIC],
        "SES_SNS_CERTIFICATES": {CERT_URL: certificate_pem()},
        "SES_SNS_CERTIFICATE_DIR": "",
    }
    values.update(overrides)
    return values


def postmark(payload: Any, *, password: str = POSTMARK_PASSWORD) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a Postmark call with Basic credentials."""
    token = base64.b64encode(f"{POSTMARK_USER}:{password}".encode()).decode()
    return json.dumps(payload).encode(), {"Authorization": f"Basic {token}"}


def mailgun(
    payload: Any, *, key: str = MAILGUN_KEY, at: float | None = None, token: str | None = None
) -> tuple[bytes, dict[str, str]]:
    """A Mailgun call: the sample with its signature block re-made under ``key``."""
    payload = copy.deepcopy(payload)
    timestamp = str(int(time.time() if at is None else at))
    token = token or uuid.uuid4().hex + uuid.uuid4().hex[:18]
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    payload["signature"] = {"timestamp": timestamp, "token": token, "signature": signature}
    return json.dumps(payload).encode(), {}


def sendgrid(
    payload: Any, *, at: float | None = None, key: ec.EllipticCurvePrivateKey | None = None
) -> tuple[bytes, dict[str, str]]:
    """A SendGrid call: ECDSA P-256/SHA-256 over timestamp + body."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    timestamp = str(int(time.time() if at is None else at))
    signature = (key or sendgrid_key()).sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return body, {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
    }


def sns_message(
    notification: Any | None = None,
    *,
    kind: str = "Notification",
    at: datetime | None = None,
    version: str = "1",
    key: rsa.RSAPrivateKey | None = None,
    message_id: str | None = None,
    cert_url: str = CERT_URL,
    topic: str = TOPIC,
    subject: str | None = None,
) -> dict[str, Any]:
    """An SNS message (the documented envelope) carrying ``notification``, signed."""
    if kind == "Notification":
        message = sample("sns_envelope.json")
        message["Message"] = json.dumps(notification)
        message.pop("Subject", None)
        if subject is not None:
            message["Subject"] = subject
    else:
        message = sample("sns_subscription_confirmation.json")
        message["Type"] = kind
    message["MessageId"] = message_id or str(uuid.uuid4())
    message["TopicArn"] = topic
    message["Timestamp"] = (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    message["SignatureVersion"] = version
    message["SigningCertURL"] = cert_url
    # SNS SignatureVersion 1 is SHA1withRSA: what SNS sends, so what a test must make.
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303
    signature = (key or sns_key()).sign(canonical_string(message), padding.PKCS1v15(), algorithm)
    message["Signature"] = base64.b64encode(signature).decode()
    return message


def ses(notification: Any, **options: Any) -> tuple[bytes, dict[str, str]]:
    """An SNS POST as SNS makes it (JSON sent as text/plain)."""
    message = sns_message(notification, **options)
    return json.dumps(message).encode(), {
        "x-amz-sns-message-type": message["Type"],
        "Content-Type": "text/plain; charset=UTF-8",
    }


def with_recipient(provider: str, payload: Any, address: str) -> Any:
    """The sample with its recipient replaced by ``address``."""
    payload = copy.deepcopy(payload)
    if provider == "postmark":
        payload["Email"] = address
    elif provider == "mailgun":
        payload["event-data"]["recipient"] = address
    elif provider == "sendgrid":
        for event in payload:
            event["email"] = address
    else:
        for part in ("bounce", "complaint"):
            if part in payload:
                key = "bouncedRecipients" if part == "bounce" else "complainedRecipients"
                payload[part][key] = [dict(payload[part][key][0], emailAddress=address)]
    return payload
