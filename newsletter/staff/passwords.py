"""Password hashing (argon2id via argon2-cffi) and the password rules."""

from __future__ import annotations

import secrets
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..service_messages import page_gettext as _

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 256  # argon2 takes any length; a bound keeps requests cheap

_hasher = PasswordHasher()


@cache
def _dummy_hash() -> str:
    """Verified against when the address is unknown, so a login for an unknown
    address takes as long as one for a known address (no account enumeration).

    Made on first use, not at import: every process imports this module (the
    worker too), and one argon2 hash takes 64 MiB of memory and noticeable CPU time.
    """
    return _hasher.hash(secrets.token_urlsafe(16))


class WeakPassword(ValueError):
    """A new password breaks the rules; the message says which."""


def hash_password(password: str) -> str:
    """An argon2id hash with the library's current parameters."""
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; an unknown account (None) never matches."""
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with weaker parameters than today's."""
    return _hasher.check_needs_rehash(password_hash)


def check_new_password(password: str, email: str) -> None:
    """Refuse a password that is short, over-long or the account's address."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(
            _("The password must be at least %(min)s characters.", min=MIN_PASSWORD_LENGTH)
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPassword(
            _("The password must be at most %(max)s characters.", max=MAX_PASSWORD_LENGTH)
        )
    if password.strip().lower() == email.strip().lower():
        raise WeakPassword(_("The password must not be the e-mail address."))


def generate_password() -> str:
    """A random password of about 120 bits, for printing once."""
    return secrets.token_urlsafe(20)
