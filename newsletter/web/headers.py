"""Security headers on every response."""

from __future__ import annotations

from flask import Response, current_app, request

from .origin import origin_of

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def content_security_policy() -> str:
    """CSP, with ALLOWED_ORIGINS added to form-action.

    Browsers apply form-action to the redirects after a form is sent too. When
    a visitor from the static site corrects a mistyped address on our signup
    page, the answer redirects back to the site's thank-you page (``next``),
    which form-action 'self' alone would block.
    """
    origins = " ".join(o for o in map(origin_of, current_app.config["ALLOWED_ORIGINS"]) if o)
    if not origins:
        return CSP
    return CSP.replace("form-action 'self'", f"form-action 'self' {origins}")


TOKEN_PREFIXES = ("/confirm/", "/unsubscribe/", "/manage/")


def add_security_headers(response: Response) -> Response:
    """Strict defaults: no inline script or style, no framing, no referrer.

    ``Referrer-Policy: no-referrer`` matters here: pages behind token links
    must not hand the token to any other site through the Referer header.
    """
    headers = response.headers
    headers.setdefault("Content-Security-Policy", content_security_policy())
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
