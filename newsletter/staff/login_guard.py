"""Login limits kept on the server: one rate-limit key per account (never the
address), and a bounded number of two-factor codes per pending login."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from flask import Flask, current_app
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from ..models import StaffUser
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


# A pending login (the password was right, the code is owed) takes this many codes;
# then the person starts again with the password, which has its own rate limit.
CODE_ATTEMPTS = 5
PENDING_LOGIN_SECONDS = 300  # the code must follow the password within 5 minutes
_EXTENSION = "newsletter.login_guard"


def init_app(app: Flask) -> None:
    """Count code attempts in RATELIMIT_STORAGE_URI (Redis with several processes).

    The count lives on the server, not in the session cookie, which a client can
    keep a copy of and send again. It holds whether or not rate limiting is on.
    """
    storage = storage_from_string(str(app.config["RATELIMIT_STORAGE_URI"]))
    app.extensions[_EXTENSION] = MovingWindowRateLimiter(storage)


def _counter() -> MovingWindowRateLimiter:
    limiter: MovingWindowRateLimiter = current_app.extensions[_EXTENSION]
    return limiter


def _attempts() -> RateLimitItem:
    """CODE_ATTEMPTS in a moving window as long as a pending login lives: every
    code a pending login is sent stays counted until the pending login expired."""
    return RateLimitItemPerSecond(CODE_ATTEMPTS, PENDING_LOGIN_SECONDS)


def new_pending(user: StaffUser, target: str) -> dict[str, object]:
    """A pending login for the session: the account, its session version, when,
    where to go next, and a random id its code attempts are counted under."""
    return {
        "id": user.id,
        "version": user.session_version,
        "at": int(time.time()),
        "next": target,
        "nonce": secrets.token_urlsafe(18),
    }


def pending_open(pending: dict[str, object], user: StaffUser) -> bool:
    """True while a pending login may take a code: not expired, the account's
    sessions not ended since (logout, password, reset), codes left to try."""
    nonce, at = pending.get("nonce"), pending.get("at")
    if not isinstance(nonce, str) or not isinstance(at, int):
        return False
    if time.time() - at > PENDING_LOGIN_SECONDS or not user.is_active:
        return False
    if pending.get("version") != user.session_version:
        return False
    return _counter().test(_attempts(), "login-code", nonce)


def take_attempt(pending: dict[str, object]) -> bool:
    """Count one code for this pending login; False when none was left (the
    check and the count are one step in the storage, so parallel requests with
    copies of one cookie get CODE_ATTEMPTS codes in all)."""
    return _counter().hit(_attempts(), "login-code", str(pending.get("nonce")))
