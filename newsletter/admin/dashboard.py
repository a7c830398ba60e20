"""The console's start page."""

from __future__ import annotations

from flask import render_template
from flask.typing import ResponseReturnValue

from ..models import Role
from . import bp
from .access import requires


@bp.route("/")
@requires(Role.VIEWER)
def dashboard() -> ResponseReturnValue:
    """Overview of lists, subscribers and campaigns."""
    return render_template("admin/dashboard.html")
