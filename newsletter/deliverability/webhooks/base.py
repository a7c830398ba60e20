"""What every provider's webhook module shares: the call, the rejection, strict field readers.

A provider module has two functions:

- ``authenticate(call, settings) -> Verified``: checks the call the provider's
  way and returns the decoded payload, or raises ``Rejected`` (404 when the
  provider is not configured here, 401/403 when the call is not the
  provider's, 400 when it cannot be read);
- ``parse(payload) -> list[IncomingReport]``: the bounces and complaints the
  payload reports, or ``Rejected(400)`` when a field that matters has the
  wrong shape. Events that are no bounce or complaint (delivered, opened ...)
  give nothing. Nothing is recorded unless the whole payload parses.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# Longest value accepted in a field that names something (an id, an address).
MAX_FIELD = 1000
MAX_ADDRESS = 320


class Rejected(Exception):
    """The call is refused with ``status``; ``reason`` is logged, never shown to the caller."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class WebhookCall:
    """One POST as received: lower-cased header names, the raw body, and the time it came."""

    headers: Mapping[str, str]
    body: bytes
    now: float

    def header(self, name: str) -> str | None:
        """A header's value, or None."""
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class Verified:
    """An authenticated payload; ``replay_key`` names this delivery when the
    provider gives it a one-time id (a Mailgun token, an SNS MessageId ...)."""

    payload: Any
    replay_key: str | None = None


def load_json(body: bytes) -> Any:
    """The body as JSON, or ``Rejected(400)``: strict UTF-8, no NaN or Infinity."""

    def no_constant(name: str) -> Any:
        raise ValueError(f"JSON constant {name} is not allowed")

    try:
        return json.loads(body.decode("utf-8"), parse_constant=no_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise Rejected(400, f"body is not JSON: {type(exc).__name__}") from None


def check_age(timestamp: float, call: WebhookCall, settings: Mapping[str, Any]) -> None:
    """Refuse a signed timestamp further than WEBHOOK_MAX_AGE seconds from now (either way)."""
    max_age = float(settings["WEBHOOK_MAX_AGE"])
    if not math.isfinite(timestamp) or abs(call.now - timestamp) > max_age:
        raise Rejected(403, "timestamp outside the replay window")


def text(value: Any, field: str, *, limit: int = MAX_FIELD, required: bool = True) -> str | None:
    """A string field that is safe to store and log: no NUL, CR, LF or lone
    surrogate, at most ``limit`` characters; ``Rejected(400)`` otherwise."""
    if not required and (value is None or (isinstance(value, str) and not value.strip())):
        return None
    if not isinstance(value, str) or not value.strip():
        raise Rejected(400, f"{field}: not a string")
    if len(value) > limit:
        raise Rejected(400, f"{field}: too long")
    if any(c in value for c in "\0\r\n"):
        raise Rejected(400, f"{field}: control character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Rejected(400, f"{field}: lone surrogate") from None
    return value.strip()


def diagnostic(*parts: Any) -> str:
    """Status code and text for the report: printable pieces joined, at most 300 characters.

    Anything that is not a short string or number is left out; control
    characters and lone surrogates become spaces or are dropped.
    """
    pieces = []
    for part in parts:
        if isinstance(part, bool) or part is None:
            continue
        if isinstance(part, int | float):
            part = str(part)
        if not isinstance(part, str):
            continue
        clean = part.encode("utf-8", "replace").decode("utf-8")
        clean = "".join(c if c.isprintable() else " " for c in clean[:1000])
        clean = " ".join(clean.split())
        if clean:
            pieces.append(clean)
    return " ".join(pieces)[:300]


def epoch(value: Any, field: str) -> float:
    """A Unix timestamp (number or digits), or ``Rejected(400)``."""
    if isinstance(value, bool):
        raise Rejected(400, f"{field}: not a timestamp")
    if isinstance(value, str) and len(value) <= 20:
        try:
            value = float(value)
        except ValueError:
            raise Rejected(400, f"{field}: not a timestamp") from None
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise Rejected(400, f"{field}: not a timestamp")
    if not 0 <= value < 253402300800:  # year 10000
        raise Rejected(400, f"{field}: timestamp out of range")
    return float(value)


def when(value: Any, field: str) -> datetime | None:
    """A time the provider gives (Unix seconds or ISO 8601), in UTC; None if absent.

    An unreadable time is no reason to lose the report: it gives None too.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(epoch(value, field), UTC)
        except (Rejected, OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and len(value) <= 64:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def mapping(value: Any, field: str) -> Mapping[str, Any]:
    """A JSON object, or ``Rejected(400)``."""
    if not isinstance(value, dict):
        raise Rejected(400, f"{field}: not an object")
    return value


def part(value: Any) -> Mapping[str, Any]:
    """An optional nested object: itself, or empty when it is anything else."""
    return value if isinstance(value, dict) else {}


class ReplayMemory:
    """Keys seen within the replay window, in this process (bounded, oldest dropped).

    A call whose one-time key was seen is answered without being acted on
    again. Several processes each keep their own memory; the report's
    dedupe key in the database makes an event that slips past count once anyway.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        self._capacity = capacity

    def seen(self, key: str, now: float | None = None) -> bool:
        """Whether ``key`` was remembered and has not expired."""
        now = time.time() if now is None else now
        with self._lock:
            expiry = self._seen.get(key)
            return expiry is not None and expiry > now

    def remember(self, key: str, ttl: float, now: float | None = None) -> None:
        """Remember ``key`` for ``ttl`` seconds."""
        now = time.time() if now is None else now
        with self._lock:
            self._seen[key] = now + ttl
            self._seen.move_to_end(key)
            while self._seen and (
                len(self._seen) > self._capacity or next(iter(self._seen.values())) <= now
            ):
                self._seen.popitem(last=False)
