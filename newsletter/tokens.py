"""Signed tokens for the links in mails.

A token carries a subscriber's random ``token_key`` (never the address: URLs
end up in logs) and is scoped by salt, so a token made for one purpose is
worthless for another. Keys: SECRET_KEY signs; SECRET_KEY_FALLBACKS still
verify, so rotating the secret does not break links already sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer


class Purpose:
    """Token scopes (the salts). Confirm and export tokens expire; the others do not."""

    CONFIRM = "newsletter.confirm"
    UNSUBSCRIBE = "newsletter.unsubscribe"
    MANAGE = "newsletter.manage"
    # The data-copy download link (GDPR Art. 15/20): expires after DATA_EXPORT_MAX_AGE.
    DATA_EXPORT = "newsletter.data-export"


class InvalidToken(Exception):
    """Tampered, truncated, or signed for another purpose."""


class ExpiredToken(Exception):
    """Genuine but too old; ``payload`` is still usable to offer a fresh mail."""

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__("token expired")
        self.payload = payload


@dataclass(frozen=True)
class TokenPayload:
    """What a link names: whose it is and, where it matters, which lists."""

    subscriber_key: str
    list_ids: tuple[int, ...] = ()


def _serializer(purpose: str) -> URLSafeTimedSerializer:
    """A serializer that signs with SECRET_KEY and also accepts the fallbacks."""
    config = current_app.config
    # itsdangerous signs with the last key and verifies with all of them.
    keys = (*config["SECRET_KEY_FALLBACKS"], config["SECRET_KEY"])
    return _cached_serializer(purpose, keys)


@lru_cache(maxsize=32)
def _cached_serializer(purpose: str, keys: tuple[str, ...]) -> URLSafeTimedSerializer:
    """One serializer per purpose and key set, not one per token.

    A campaign mints two tokens per recipient, and building the serializer, its
    signer and the signer's derived key was a third of that cost. The key set
    is part of the cache key, so a changed SECRET_KEY (or fallback list) gets a
    new serializer. The tokens are the same bytes as without the caches.
    """
    return _Serializer(list(keys), salt=purpose, signer=_Signer)


class _Signer(TimestampSigner):
    """itsdangerous' timestamp signer, remembering the key it derives per secret."""

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        """The same key as itsdangerous derives, hashed once per secret."""
        cache: dict[str | bytes | None, bytes] = self.__dict__.setdefault("_derived", {})
        if secret_key not in cache:
            cache[secret_key] = super().derive_key(secret_key)
        return cache[secret_key]


class _Serializer(URLSafeTimedSerializer):
    """itsdangerous' URL-safe timed serializer, keeping one signer per salt."""

    def make_signer(self, salt: str | bytes | None = None) -> TimestampSigner:
        """The signer itsdangerous would build, built once."""
        cache: dict[str | bytes | None, TimestampSigner] = self.__dict__.setdefault("_signers", {})
        if salt not in cache:
            cache[salt] = super().make_signer(salt)  # type: ignore[assignment]
        return cache[salt]


def make_token(purpose: str, subscriber_key: str, list_ids: tuple[int, ...] = ()) -> str:
    """Sign a link token for ``purpose``."""
    data: dict[str, Any] = {"s": subscriber_key}
    if list_ids:
        data["l"] = list(list_ids)
    return str(_serializer(purpose).dumps(data))


def read_token(purpose: str, token: str, max_age: int | None = None) -> TokenPayload:
    """Verify a token; raise :class:`InvalidToken` or :class:`ExpiredToken`."""
    serializer = _serializer(purpose)
    if len(token) > 512:
        raise InvalidToken("token too long")
    try:
        data = serializer.loads(token, max_age=max_age)
    except SignatureExpired as exc:
        # The signature was good, only the age failed: the payload is genuine.
        raise ExpiredToken(_parse(exc.payload and serializer.load_payload(exc.payload))) from exc
    except BadSignature as exc:
        raise InvalidToken(str(exc)) from exc
    return _payload(_parse(data))


def _parse(data: Any) -> dict[str, Any]:
    """Check a payload's shape; a valid signature over a wrong shape is still invalid."""
    if not isinstance(data, dict) or not isinstance(data.get("s"), str):
        raise InvalidToken("malformed payload")
    lists = data.get("l", [])
    if not isinstance(lists, list) or not all(isinstance(i, int) for i in lists):
        raise InvalidToken("malformed payload")
    return data


def _payload(data: dict[str, Any]) -> TokenPayload:
    return TokenPayload(subscriber_key=data["s"], list_ids=tuple(data.get("l", [])))


def payload_of(expired: ExpiredToken) -> TokenPayload:
    """The genuine payload of an expired token."""
    return _payload(expired.payload)
