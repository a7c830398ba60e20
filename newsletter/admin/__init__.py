"""The staff console at /admin: login, roles, CSRF, session expiry, and its pages.

Every view here needs a logged-in staff member (``before_request``); each view
names the least role it needs with :func:`access.requires`. Every POST is
checked for a CSRF token before any view runs.
"""

from __future__ import annotations

import time

from flask import Blueprint, Flask, current_app, flash, redirect, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, logout_user

from ..extensions import csrf, login_manager
from ..models import Role
from ..staff import login_guard
from ..staff.service import load_session_user, two_factor_required

bp = Blueprint("admin", __name__, url_prefix="/admin")

# Views reachable without a full login (the login steps themselves).
PUBLIC_ENDPOINTS = frozenset({"admin.login", "admin.login_code"})
# Reachable while two-factor enrolment is still owed (see _enforce_session).
ENROLMENT_ENDPOINTS = frozenset({"admin.two_factor", "admin.logout", "admin.password"})

# The console's menu: endpoint, label, least role, and the endpoint prefix that
# marks the current section. Entries whose view does not exist are left out.
NAV = (
    ("admin.dashboard", _l("Dashboard"), Role.VIEWER, "admin.dashboard"),
    ("admin.subscribers", _l("Subscribers"), Role.VIEWER, "admin.subscriber"),
    ("admin.lists", _l("Lists"), Role.VIEWER, "admin.list"),
    ("admin.campaigns", _l("Campaigns"), Role.VIEWER, "admin.campaign"),
    ("admin.deliverability", _l("Deliverability"), Role.VIEWER, "admin.deliverability"),
    ("admin.imports", _l("Import"), Role.EDITOR, "admin.import"),
    ("admin.staff_list", _l("Staff"), Role.OWNER, "admin.staff"),
    ("admin.audit_log", _l("Audit log"), Role.OWNER, "admin.audit"),
)


def init_app(app: Flask) -> None:
    """Bind Flask-Login and CSRF to the app and register the console's views."""
    from . import audit_views, auth, staff_views  # noqa: F401  (register routes)

    login_manager.init_app(app)
    login_manager.login_view = "admin.login"
    login_manager.login_message = ""  # the login page explains itself
    login_manager.session_protection = "basic"
    login_manager.user_loader(load_session_user)
    login_guard.init_app(app)
    csrf.init_app(app)
    _register_feature_views()
    app.register_blueprint(bp)


@bp.app_context_processor
def _menu() -> dict[str, object]:
    """``admin_nav()`` in templates: the menu entries the current person may open."""

    def admin_nav() -> list[tuple[str, str, bool]]:
        if not current_user.is_authenticated:
            return []
        views = current_app.view_functions
        return [
            (endpoint, str(label), (request.endpoint or "").startswith(prefix))
            for endpoint, label, role, prefix in NAV
            if endpoint in views and current_user.may(role)
        ]

    return {"admin_nav": admin_nav}


def _register_feature_views() -> None:
    """Import the feature modules that add their routes to ``bp``."""
    from . import (  # noqa: F401
        campaign_control,
        campaign_preview,
        campaigns,
        dashboard,
        deliverability,
        imports,
        intake,
        lists,
        subscribers,
    )


@bp.before_request
def _enforce_session() -> ResponseReturnValue | None:
    """CSRF, login, idle and absolute expiry, and owed two-factor enrolment."""
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        csrf.protect()
    if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint == "static":
        return None
    if not current_user.is_authenticated:
        return login_manager.unauthorized()
    now = int(time.time())
    idle = int(current_app.config["STAFF_IDLE_TIMEOUT"])
    lifetime = int(current_app.permanent_session_lifetime.total_seconds())
    if now - int(session.get("seen", now)) > idle or now - int(session.get("at", now)) > lifetime:
        logout_user()
        session.clear()
        flash(_("Your session has expired. Please log in again."), "info")
        return redirect(url_for("admin.login", next=request.full_path))
    session["seen"] = now
    owes_enrolment = two_factor_required() and not current_user.totp_secret
    if owes_enrolment and request.endpoint not in ENROLMENT_ENDPOINTS:
        flash(_("Two-factor login is required. Set it up to continue."), "info")
        return redirect(url_for("admin.two_factor"))
    return None
