"""VERP: a per-mail envelope sender, so that a bounce names its mail without guessing.

With BOUNCE_DOMAIN set, every campaign delivery and outbox mail is sent with
the envelope sender ``bounces+<opaque>@BOUNCE_DOMAIN``. The opaque part holds
the kind of row (``d`` a campaign delivery, ``o`` an outbox mail), its id and
an HMAC tag under the ledger key, so a bounce cannot be forged to name another
mail, and it holds no address and no token.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from flask import current_app

from ..ledger.keys import ledger_keys

KINDS = ("d", "o")
LOCAL_PREFIX = "bounces+"
TAG_LENGTH = 10
OPAQUE = re.compile(rf"([do])([0-9a-z]{{1,13}})-([0-9a-f]{{{TAG_LENGTH}}})")


def envelope_sender(kind: str, row_id: int) -> str | None:
    """The envelope sender of a mail, or None when BOUNCE_DOMAIN is not set."""
    domain = str(current_app.config.get("BOUNCE_DOMAIN") or "").strip()
    if not domain:
        return None
    if kind not in KINDS:
        raise ValueError(f"VERP kind must be one of {KINDS}")
    number = _base36(row_id)
    return f"{LOCAL_PREFIX}{kind}{number}-{_tag(kind, number)}@{domain}"


def parse_verp(address: str) -> tuple[str, int] | None:
    """The (kind, row id) an envelope address names, or None when it is not one
    of ours (another local part, another domain, a wrong tag)."""
    local, _, domain = address.strip().strip("<>").rpartition("@")
    expected = str(current_app.config.get("BOUNCE_DOMAIN") or "").strip().casefold()
    if not expected or domain.casefold() != expected:
        return None
    if not local.casefold().startswith(LOCAL_PREFIX):
        return None
    found = OPAQUE.fullmatch(local[len(LOCAL_PREFIX) :].casefold())
    if found is None:
        return None
    kind, number, tag = found.groups()
    if not any(hmac.compare_digest(tag, _tag(kind, number, key)) for key in ledger_keys()):
        return None
    return kind, int(number, 36)


def _base36(number: int) -> str:
    if number < 0:
        raise ValueError("VERP ids are not negative")
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, rest = divmod(number, 36)
        text = digits[rest] + text
        if number == 0:
            return text


def _tag(kind: str, number: str, key: bytes | None = None) -> str:
    mac = hmac.new(key or ledger_keys()[0], f"verp:{kind}{number}".encode(), hashlib.sha256)
    return mac.hexdigest()[:TAG_LENGTH]
