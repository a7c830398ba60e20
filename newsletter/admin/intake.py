"""Staff console: signups a worker could not process (routes on the admin blueprint).

Anyone in the console may look (every role sees subscribers' addresses, and
so the addresses here); editors retry or discard a row. Each button is a POST
(the blueprint checks its CSRF token) that calls one service function and
returns to the page with a message.
"""

from __future__ import annotations

from flask import flash, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _

from ..models import Role
from ..subscriptions.intake import queue_state, signal_arrival
from ..subscriptions.intake_admin import discard_failed, failed_rows, retry_failed
from . import bp
from .access import client_ip, requires, staff

# Who sees the address of a failed row: whoever may see subscribers' addresses
# (the subscriber list is open to this role).
ADDRESS_ROLE = Role.VIEWER
# Who may retry or discard a row: whoever may change subscribers.
ACTION_ROLE = Role.EDITOR


@bp.route("/intake")
@requires(Role.VIEWER)
def intake_failed() -> ResponseReturnValue:
    """The failed intake rows, oldest first, with why each failed."""
    me = staff()
    return render_template(
        "admin/intake_failed.html",
        rows=failed_rows(),
        state=queue_state(),
        show_address=me.may(ADDRESS_ROLE),
        may_act=me.may(ACTION_ROLE),
    )


@bp.route("/intake/<id:row_id>/retry", methods=["POST"])
@requires(ACTION_ROLE)
def intake_retry(row_id: int) -> ResponseReturnValue:
    """Let a worker take a failed row again."""
    if retry_failed(row_id, actor=staff(), ip=client_ip()):
        signal_arrival()
        flash(_("Signup #%(id)s waits for a worker again.", id=row_id), "success")
    else:
        flash(_("Signup #%(id)s is no longer among the failed ones.", id=row_id), "info")
    return redirect(url_for("admin.intake_failed"))


@bp.route("/intake/<id:row_id>/discard", methods=["POST"])
@requires(ACTION_ROLE)
def intake_discard(row_id: int) -> ResponseReturnValue:
    """Delete a failed row and the personal data in it."""
    if discard_failed(row_id, actor=staff(), ip=client_ip()):
        flash(_("Signup #%(id)s is discarded.", id=row_id), "success")
    else:
        flash(_("Signup #%(id)s is no longer among the failed ones.", id=row_id), "info")
    return redirect(url_for("admin.intake_failed"))
