"""Web layer: blueprints, security headers, error pages, log redaction."""

from __future__ import annotations

import logging
import re

from flask import Flask, make_response, render_template, request
from flask.typing import ResponseReturnValue
from flask_babel import get_locale
from flask_babel import gettext as _
from sqlalchemy.exc import InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException, ServiceUnavailable

from ..transaction import discard_failed_transaction
from .headers import add_security_headers

TOKEN_ROUTES = ("confirm", "unsubscribe", "manage", "data")
# One character of a token as a client may send it: itself or a %-escape.
_LINK_CHARACTER = r"(?:[A-Za-z0-9_.\-]|%[0-9A-Fa-f]{2})"


def _spelled(route: str) -> str:
    """A pattern for ``route`` with any of its letters %-escaped."""
    return "".join(f"(?:{c}|%{ord(c):02x})" for c in route)


TOKEN_IN_PATH = re.compile(
    rf"/+({'|'.join(map(_spelled, TOKEN_ROUTES))})/+"
    rf"({_LINK_CHARACTER}{{6}}){_LINK_CHARACTER}*",
    re.IGNORECASE,
)


class RedactTokens(logging.Filter):
    """Cut link tokens in logged request lines down to a 6-character prefix.

    Request lines are logged as the client sent them (gunicorn's access log),
    and the server decodes %-escapes before routing, so a token or its route
    spelled with escapes (``/manage/%65yJz...``) or doubled slashes is cut too:
    the prefix is six characters, each a character or one escape. Matching
    ignores case; cutting a path that only looks like a link costs nothing.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the message in place; never drop the record."""
        message = record.getMessage()
        redacted = TOKEN_IN_PATH.sub(r"/\1/\2…", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def init_app(app: Flask) -> None:
    """Register blueprints, headers and error pages."""
    # links and signup attach their routes to public.bp, so they load before it is registered.
    from . import (  # noqa: F401
        api,
        archive,
        devmailbox,
        ledger,
        links,
        openapi,
        privacy,
        public,
        signup,
        webhooks,
    )

    app.register_blueprint(public.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(archive.bp)
    app.register_blueprint(privacy.bp)
    app.register_blueprint(ledger.bp)
    app.register_blueprint(webhooks.bp)
    if app.debug and not app.config.get("MAIL_SERVER"):
        app.register_blueprint(devmailbox.bp)
    app.jinja_env.globals["get_locale"] = get_locale
    app.after_request(add_security_headers)
    app.register_error_handler(HTTPException, _error_page)
    app.register_error_handler(OperationalError, _database_unavailable)
    app.register_error_handler(InterfaceError, _database_unavailable)
    # app.logger: Flask logs "Exception on <path>" there for every 500.
    for logger in (logging.getLogger("werkzeug"), logging.getLogger("gunicorn.access"), app.logger):
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())


def _database_unavailable(exc: Exception) -> ResponseReturnValue:
    """The database is down or went away mid-request: 503 with Retry-After, never 500.

    The request's transaction is discarded (transaction.discard_failed_transaction),
    so nothing it wrote stays half written; the visitor is told to try again
    shortly. The pool's pre-ping replaces dead connections once the database is back.
    """
    discard_failed_transaction()
    logging.getLogger(__name__).warning(
        "database unavailable: %s", str(getattr(exc, "orig", exc)).splitlines()[0][:200]
    )
    error = ServiceUnavailable(
        _("The service is briefly unavailable. Please try again in a moment.")
    )
    response = make_response(_error_page(error))
    response.headers["Retry-After"] = "5"
    return response


def _error_page(exc: HTTPException) -> ResponseReturnValue:
    """A plain, translated error page; JSON for the API (see api.json_error)."""
    if request.path.startswith("/api/"):
        from flask import jsonify

        return jsonify(error=exc.description or exc.name), exc.code or 500
    if _request_ctx_has_no_urls():
        # A Host header no URL can be built for ("a..b", a label over 63
        # characters): werkzeug refuses it before routing, and the page's links
        # cannot be made. Plain text, not a 500 from the template.
        text = f"{exc.code or 500} {exc.name}: {exc.description or ''}".strip()
        return text, exc.code or 500, {"Content-Type": "text/plain; charset=utf-8"}
    return render_template("public/error.html", error=exc), exc.code or 500


def _request_ctx_has_no_urls() -> bool:
    """Whether this request has no URL adapter (its host could not be bound)."""
    from flask.globals import request_ctx

    return request_ctx.url_adapter is None
