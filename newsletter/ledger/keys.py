"""Keyed digests for pseudonymous matching, and the commitment to an event's personal fields."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from flask import current_app

from .jcs import canonical


def ledger_keys() -> list[bytes]:
    """The ledger key first, then the keys older settings would have used.

    LEDGER_KEY should be set once and kept. Where it is not set, the key is
    derived from SECRET_KEY; the fallbacks' derivations are kept too, so a
    rotated SECRET_KEY does not make old events unverifiable.
    """
    config = current_app.config
    if config.get("LEDGER_KEY"):
        return [str(config["LEDGER_KEY"]).encode()]
    secrets = [config["SECRET_KEY"], *reversed(config["SECRET_KEY_FALLBACKS"])]
    return [_derive(str(secret)) for secret in secrets]


def _derive(secret: str) -> bytes:
    return hmac.new(secret.encode(), b"newsletter.ledger-key", hashlib.sha256).digest()


def keyed_digest(key: bytes, value: str) -> str:
    """HMAC-SHA256 of ``value`` as hex."""
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def email_digest(email_key: str, key: bytes | None = None) -> str:
    """The pseudonym of a normalised address under the current (or given) key."""
    return keyed_digest(key or ledger_keys()[0], "email:" + email_key)


def email_digests(email_key: str) -> list[str]:
    """The pseudonym under every key in use, for lookups."""
    return [email_digest(email_key, key) for key in ledger_keys()]


def commitment(salt: bytes, personal: Mapping[str, str | None]) -> str:
    """SHA-256 (hex) over the salt and the RFC 8785 form of the personal fields.

    Not keyed: anyone holding the salt and the fields (a consent bundle) can
    check it, and without the salt the fields cannot be guessed from it.
    """
    return hashlib.sha256(salt + canonical(dict(personal))).hexdigest()
