"""Security headers on every response."""

from __future__ import annotations

from flask import Response, current_app, request

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
TOKEN_PREFIXES = ("/confirm/", "/unsubscribe/", "/manage/")


def add_security_headers(response: Response) -> Response:
    """Strict defaults: no inline script or style, no framing, no referrer.

    ``Referrer-Policy: no-referrer`` matters here: pages behind token links
    must not hand the token to any other site through the Referer header.
    """
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    # The console sends its own origin as Referer (same-origin): Flask-WTF's CSRF
    # check on https needs it. Everything else sends no Referer at all.
    staff_page = request.path.startswith("/admin")
    headers.setdefault("Referrer-Policy", "same-origin" if staff_page else "no-referrer")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    if str(current_app.config.get("BASE_URL", "")).startswith("https://"):
        headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
    if request.path.startswith(TOKEN_PREFIXES):
        headers["Cache-Control"] = "no-store"
    return response
