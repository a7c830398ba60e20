"""RFC 8785 (JSON Canonicalization Scheme) for the ledger's leaves and commitments."""

from __future__ import annotations

import json
from typing import Any

import rfc8785

# Integers JCS writes as they are (ECMAScript numbers are exact up to here).
SAFE_INTEGER = 2**53 - 1


def canonical(value: Any) -> bytes:
    """The RFC 8785 form of ``value`` as UTF-8.

    Python's C JSON encoder with sorted keys and no whitespace writes exactly
    the RFC 8785 bytes for what the ledger holds: ASCII keys, text, booleans,
    null and integers within 2**53 (the string escapes are the same, and ASCII
    keys sort the same by code point as by UTF-16 unit). It is several times
    faster than the ``rfc8785`` package, which takes everything else (a float
    or a huge integer in an event's details, a non-ASCII key, a lone
    surrogate); tests/test_ledger_jcs.py checks the two agree.
    """
    if _plain(value):
        try:
            return json.dumps(
                value, sort_keys=True, separators=(",", ":"), ensure_ascii=False
            ).encode()
        except UnicodeEncodeError:  # a lone surrogate: rfc8785 says so
            pass
    return rfc8785.dumps(value)


def _plain(value: Any) -> bool:
    """True when ``value`` holds nothing the plain encoder could write differently."""
    if value is None or isinstance(value, str | bool):
        return True
    if isinstance(value, int):
        return -SAFE_INTEGER <= value <= SAFE_INTEGER
    if isinstance(value, list):
        return all(_plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and k.isascii() and _plain(v) for k, v in value.items())
    return False
