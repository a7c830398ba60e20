"""Origin checks for cookie-less public POSTs, and safe return URLs.

Public pages set no cookie, so there is no session to hang a CSRF token on.
Browsers send ``Origin`` on every cross-site POST (and ``Referer`` where an old
one does not); accepting only our own origin and ALLOWED_ORIGINS stops other
sites from signing visitors up behind their back.

Our own origin is BASE_URL, never the request's ``Host`` or ``X-Forwarded-Host``:
any client can send those, and a trusted Host would let it pass the Origin check
and turn ``next`` into an open redirect to a site of its choosing.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from flask import current_app, request

DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str | None) -> str | None:
    """``scheme://host[:port]`` of a URL, lower-cased, default port dropped."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    origin = f"{parts.scheme}://{parts.hostname.lower()}"
    if port and port != DEFAULT_PORTS[parts.scheme]:
        origin += f":{port}"
    return origin


def trusted_origins() -> set[str]:
    """BASE_URL's origin plus ALLOWED_ORIGINS: settings only, nothing from the request."""
    origins = {origin_of(current_app.config.get("BASE_URL"))}
    origins.update(origin_of(o) for o in current_app.config["ALLOWED_ORIGINS"])
    return {o for o in origins if o}


def request_origin() -> str | None:
    """Where the request came from: Origin, or lacking it, the Referer's origin."""
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        return origin_of(origin)
    return origin_of(request.headers.get("Referer"))


def origin_allowed(*, required: bool = True) -> bool:
    """Whether the request's origin is trusted; with ``required=False`` a
    request without Origin/Referer (a server-side API client) passes too."""
    has_header = bool(request.headers.get("Origin") or request.headers.get("Referer"))
    if not has_header:
        return not required
    return request_origin() in trusted_origins()


def cors_origin() -> str | None:
    """The Origin to echo in CORS headers: only a configured cross-origin site."""
    origin = origin_of(request.headers.get("Origin"))
    allowed = {origin_of(o) for o in current_app.config["ALLOWED_ORIGINS"]}
    return origin if origin and origin in allowed else None


# Browsers drop tabs and newlines anywhere in a URL and read a backslash as "/",
# so "/<TAB>/evil.example" or "https://evil.example<BACKSLASH>@our.site/" lead to
# another site although urlsplit sees a local path or our host. A return address
# never needs such characters (nor spaces): refuse them outright.
UNSAFE_IN_URL = re.compile(r"[\x00-\x20\x7f-\x9f\\]")


def safe_next(url: str | None) -> str | None:
    """A return URL we may redirect to: a local path or a configured origin
    (BASE_URL, ALLOWED_ORIGINS), whatever Host the request names."""
    if not url or len(url) > 2000 or UNSAFE_IN_URL.search(url):
        return None
    if url.startswith("/") and not url.startswith("//"):
        return url
    return url if origin_of(url) in trusted_origins() else None
