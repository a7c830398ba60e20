"""The public blueprint: pages that need no login and set no cookie.

Its signup and link routes live in signup.py and links.py, which attach them to
``bp``; init_app imports them before the blueprint is registered.
"""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from ..database import reachable

bp = Blueprint("public", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """Liveness and a database round trip; 503 when the database is unreachable."""
    if not reachable():
        return jsonify(status="error", database="unreachable"), 503
    return jsonify(status="ok", database="ok")
