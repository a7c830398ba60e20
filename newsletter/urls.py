"""Our public origin and absolute URLs on it, for mails and pages alike.

Links and origins come from BASE_URL, never from a request's Host header.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import current_app, url_for


def base_url() -> str:
    """The public origin links in mails and pages point to."""
    return str(current_app.config.get("BASE_URL") or "http://localhost:5000").rstrip("/")


def mail_domain() -> str:
    """The host name used in Message-ID and List-Id."""
    return urlsplit(base_url()).hostname or "localhost"


def external_url(endpoint: str, **values: Any) -> str:
    """An absolute URL on BASE_URL, usable outside a request (in the worker)."""
    with current_app.test_request_context("/", base_url=base_url()):
        return url_for(endpoint, _external=True, **values)
