"""DKIM signing with dkimpy (RSA or Ed25519), covering the list headers."""

from __future__ import annotations

from pathlib import Path

import dkim
from flask import current_app

SIGNED_HEADERS = [
    b"from", b"to", b"subject", b"date", b"message-id", b"list-id",
    b"list-unsubscribe", b"list-unsubscribe-post",
]  # fmt: skip
# Each name is listed once more than the message has it ("oversigning"): a
# header added on the way, e.g. a second List-Unsubscribe put above ours,
# or a List-Unsubscribe added to a confirmation mail, breaks the signature
# instead of riding along under it.
INCLUDE_HEADERS = SIGNED_HEADERS * 2


def _private_key() -> bytes | None:
    config = current_app.config
    if config.get("DKIM_PRIVATE_KEY"):
        return str(config["DKIM_PRIVATE_KEY"]).encode()
    if config.get("DKIM_PRIVATE_KEY_FILE"):
        return Path(config["DKIM_PRIVATE_KEY_FILE"]).read_bytes()
    return None


def sign_message(message: bytes) -> bytes:
    """Prepend a DKIM-Signature when DKIM_SELECTOR, DKIM_DOMAIN and a key are set.

    One list serves every kind of mail: a name the message lacks (List-* on a
    confirmation mail) is signed as absent, so it cannot be added later.
    """
    config = current_app.config
    key = _private_key()
    if not (key and config.get("DKIM_SELECTOR") and config.get("DKIM_DOMAIN")):
        return message
    algorithm = b"ed25519-sha256" if config.get("DKIM_ALGORITHM") == "ed25519" else b"rsa-sha256"
    signature = dkim.sign(
        message,
        str(config["DKIM_SELECTOR"]).encode(),
        str(config["DKIM_DOMAIN"]).encode(),
        key,
        include_headers=INCLUDE_HEADERS,
        signature_algorithm=algorithm,
        linesep=b"\r\n",
    )
    return signature + message
