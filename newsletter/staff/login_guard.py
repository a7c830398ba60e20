"""Login limits kept on the server: one rate-limit key per account, never the address."""

from __future__ import annotations

import hashlib
import hmac

from flask import current_app

from . import service

# 96 bits of the digest: collisions between accounts are out of reach, and the
# key says nothing about the address to whoever reads the limiter's log lines.
ADDRESS_DIGEST_CHARS = 24


def _digest_key() -> bytes:
    """A key for address digests, derived from SECRET_KEY (rotating it only
    restarts the counts)."""
    secret = str(current_app.config["SECRET_KEY"]).encode()
    return hmac.new(secret, b"newsletter.login-limit", hashlib.sha256).digest()


def address_key(typed: str | None) -> str:
    """The rate-limit key of a typed login address.

    Every form of one account's address (case, the long s U+017F, ß, the Kelvin
    sign, the domain as IDNA) gives the key of that account, because it is made from
    :func:`service.login_address`, the function the login looks accounts up
    with. An invalid address is keyed on itself, case-folded. The key is a keyed
    digest, so the limiter's log lines never hold the address.
    """
    raw = typed or ""
    address = service.login_address(raw) or raw.strip().casefold()
    digest = hmac.new(_digest_key(), address.encode("utf-8", "surrogatepass"), hashlib.sha256)
    return "login:" + digest.hexdigest()[:ADDRESS_DIGEST_CHARS]
