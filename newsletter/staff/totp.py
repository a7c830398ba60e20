"""Two-factor login with TOTP (RFC 6238) codes: enrolment, QR code, verification."""

from __future__ import annotations

import hmac
import time
import unicodedata

import pyotp
import segno

from ..models import StaffUser
from ..transaction import transactional
from . import audit

ISSUER = "newsletter"
# Accept the previous and the next 30-second step too: phone clocks drift.
VALID_WINDOW = 1


def new_secret() -> str:
    """A fresh base32 secret (160 bits)."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, email: str, issuer: str = ISSUER) -> str:
    """The otpauth:// URI an authenticator app reads from the QR code."""
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=issuer)


def qr_svg(uri: str) -> str:
    """The QR code as inline SVG markup, made here: the secret never leaves the server."""
    return str(segno.make(uri, error="m").svg_inline(scale=5, dark="#111", light="#fff"))


def ascii_code(typed: str) -> str | None:
    """The code as ASCII digits: spaces dropped, and each decimal digit of any
    script (Arabic-Indic, fullwidth ...: what a phone's keyboard may type) read
    as its ASCII digit; None if anything else is in it ("²" is not a decimal digit).
    """
    digits = [unicodedata.decimal(char, None) for char in typed.strip().replace(" ", "")]
    if any(digit is None for digit in digits):
        return None
    return "".join(str(digit) for digit in digits)


def matching_step(secret: str, code: str, now: float | None = None) -> int | None:
    """The time step whose code equals ``code``, within the window; None if none."""
    ascii_digits = ascii_code(code)
    if ascii_digits is None or len(ascii_digits) != 6:
        return None
    code = ascii_digits
    totp = pyotp.TOTP(secret)
    current = int((time.time() if now is None else now) // totp.interval)
    for step in range(current - VALID_WINDOW, current + VALID_WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


@transactional
def verify_login_code(user: StaffUser, code: str, now: float | None = None) -> bool:
    """Check a login code; a code (or an older one) is never accepted twice."""
    if not user.totp_secret:
        return False
    step = matching_step(user.totp_secret, code, now)
    if step is None or (user.totp_last_step is not None and step <= user.totp_last_step):
        return False
    user.totp_last_step = step
    return True


@transactional
def enable(user: StaffUser, secret: str, code: str, *, ip: str | None = None) -> bool:
    """Turn two-factor on once the person proves their app has the secret."""
    step = matching_step(secret, code)
    if step is None:
        return False
    user.totp_secret, user.totp_last_step = secret, step
    audit.record(user, "staff.2fa_enable", "staff", user.id, ip=ip)
    return True


@transactional
def disable(user: StaffUser, *, actor: StaffUser | None, ip: str | None = None) -> None:
    """Turn two-factor off (the person, or an owner when a phone is lost); every
    session of the account ends with it (a lost phone may be a stolen one)."""
    user.totp_secret, user.totp_last_step = None, None
    user.session_version += 1
    audit.record(actor, "staff.2fa_disable", "staff", user.id, ip=ip)
