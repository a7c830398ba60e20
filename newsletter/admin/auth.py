"""Login (password, then a two-factor code), logout, password change and enrolment."""

from __future__ import annotations

import time

from flask import current_app, flash, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_limiter.util import get_remote_address
from flask_login import current_user, login_user, logout_user

from ..extensions import limiter
from ..staff import login_guard, service, totp
from ..validation import InvalidInput
from . import bp
from .access import client_ip, staff
from .forms import CodeForm, LoginForm, PasswordForm, TwoFactorOffForm


def _login_limit() -> str:
    """LOGIN_RATE_LIMIT, read per request so tests and operators can change it."""
    return str(current_app.config["LOGIN_RATE_LIMIT"])


def _too_many() -> str:
    """The message of a 429 on the login steps."""
    return _("Too many login attempts. Wait a few minutes, then try again.")


def _by_address() -> str:
    """Rate-limit key: the account being tried (a digest, see login_guard), so one
    account can't be guessed at from many IPs, nor under another spelling."""
    return login_guard.address_key(request.form.get("email"))


def _by_account() -> str:
    """Rate-limit key: the signed-in account, so the password it is asked for can't
    be guessed from many IPs (the client's address before anyone is signed in)."""
    if current_user.is_authenticated:
        return f"staff:{current_user.id}"
    return f"ip:{get_remote_address()}"


def _safe_next(target: str | None) -> str:
    """Only a path inside the console, never another site (open redirect)."""
    if target and target.startswith("/admin") and not target.startswith("//"):
        return target
    return url_for("admin.dashboard")


def _complete_login(user_id: int, target: str | None) -> ResponseReturnValue:
    """Start a fresh session for the account and go where the person was going."""
    user = service.get_staff(user_id)
    assert user is not None
    session.clear()  # nothing from before the login survives (session fixation)
    login_user(user)
    session.permanent = True
    session["at"] = session["seen"] = int(time.time())
    service.record_login(user, client_ip())
    return redirect(_safe_next(target))


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"], error_message=_too_many)
@limiter.limit(_login_limit, methods=["POST"], key_func=_by_address, error_message=_too_many)
def login() -> ResponseReturnValue:
    """Step one: address and password."""
    if current_user.is_authenticated:
        return redirect(url_for("admin.dashboard"))
    form = LoginForm(next=request.args.get("next", ""))
    if form.validate_on_submit():
        user = service.authenticate(form.email.data or "", form.password.data or "")
        if user is None:
            service.record_failed_login(form.email.data or "", client_ip())
            form.form_errors.append(_("Wrong e-mail address or password."))
            return render_template("admin/login.html", form=form), 200
        if user.totp_secret:
            session.clear()
            session["pending_login"] = login_guard.new_pending(user, form.next.data or "")
            return redirect(url_for("admin.login_code"))
        return _complete_login(user.id, form.next.data)
    return render_template("admin/login.html", form=form)


@bp.route("/login/code", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"], error_message=_too_many)
def login_code() -> ResponseReturnValue:
    """Step two: the authenticator app's code, at most CODE_ATTEMPTS per pending
    login (counted on the server); then the password is asked for again."""
    pending = session.get("pending_login")
    user = service.get_staff(int(pending["id"])) if pending else None
    if not pending or user is None or not login_guard.pending_open(pending, user):
        return _end_pending(_("Please log in again."), "info")
    form = CodeForm()
    if form.validate_on_submit():
        if not login_guard.take_attempt(pending):
            return _end_pending(_("Too many wrong codes. Log in again with your password."))
        if totp.verify_login_code(user, form.code.data or ""):
            return _complete_login(user.id, pending.get("next"))
        service.record_failed_login(user.email, client_ip())
        if not login_guard.pending_open(pending, user):
            return _end_pending(_("Too many wrong codes. Log in again with your password."))
        form.code.errors = [_("That code is wrong or was used already. Try the next one.")]
    return render_template("admin/login_code.html", form=form)


def _end_pending(message: str, category: str = "error") -> ResponseReturnValue:
    """Drop the pending login and ask for the password again."""
    session.pop("pending_login", None)
    flash(message, category)
    return redirect(url_for("admin.login"))


@bp.route("/logout", methods=["POST"])
def logout() -> ResponseReturnValue:
    """End the session, on the server too: the account's session version moves
    on, so a copy of the cookie stops working (and so do the account's other
    sessions, see docs/architecture.md). A POST with a CSRF token: a link could
    log people out."""
    service.end_sessions(staff())
    logout_user()
    session.clear()
    flash(_("You are logged out."), "info")
    return redirect(url_for("admin.login"))


@bp.route("/account/password", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"], error_message=_too_many)
@limiter.limit(_login_limit, methods=["POST"], key_func=_by_account, error_message=_too_many)
def password() -> ResponseReturnValue:
    """Change one's own password; other sessions of the account end.

    The form asks for the current password, so it is limited like the login
    (LOGIN_RATE_LIMIT per IP and per account): a held session can't guess it.
    """
    form = PasswordForm()
    if form.validate_on_submit():
        user = staff()
        try:
            service.change_password(
                user,
                form.current_password.data or "",
                form.new_password.data or "",
                ip=client_ip(),
            )
        except InvalidInput as exc:
            getattr(form, exc.field).errors = [exc.message]
        else:
            login_user(user)  # this session continues under the new version
            flash(_("Your password is changed."), "success")
            return redirect(url_for("admin.password"))
    return render_template("admin/password.html", form=form)


@bp.route("/account/two-factor", methods=["GET", "POST"])
def two_factor() -> ResponseReturnValue:
    """Set up two-factor login: scan the QR code, type a code to prove it works."""
    user = staff()
    form = CodeForm()
    if user.totp_secret:
        return render_template("admin/two_factor.html", off=TwoFactorOffForm(), enabled=True)
    secret = session.get("totp_enrol") or totp.new_secret()
    session["totp_enrol"] = secret
    if form.validate_on_submit():
        if totp.enable(user, secret, form.code.data or "", ip=client_ip()):
            session.pop("totp_enrol", None)
            flash(_("Two-factor login is on."), "success")
            return redirect(url_for("admin.dashboard"))
        form.code.errors = [_("That code does not match. Check the time on your phone.")]
    uri = totp.provisioning_uri(secret, user.email, str(current_app.config["ORGANIZATION_NAME"]))
    return render_template(
        "admin/two_factor.html",
        form=form,
        enabled=False,
        qr=totp.qr_svg(uri),
        secret=secret,
        required=service.two_factor_required(),
    )


@bp.route("/account/two-factor/disable", methods=["POST"])
@limiter.limit(_login_limit, methods=["POST"], error_message=_too_many)
@limiter.limit(_login_limit, methods=["POST"], key_func=_by_account, error_message=_too_many)
def two_factor_disable() -> ResponseReturnValue:
    """Turn one's own two-factor login off, with the password again (not while
    an owner requires it); the account's other sessions end. Limited like the
    password form, per IP and per account."""
    user = staff()
    if not user.totp_secret:
        return redirect(url_for("admin.two_factor"))
    if service.two_factor_required():
        flash(_("Two-factor login is required for every account."), "error")
        return redirect(url_for("admin.two_factor"))
    form = TwoFactorOffForm()
    if form.validate_on_submit():
        try:
            service.disable_own_two_factor(user, form.password.data or "", ip=client_ip())
        except InvalidInput as exc:
            form.password.errors = [exc.message]
        else:
            login_user(user)  # this session continues under the new version
            flash(_("Two-factor login is off."), "info")
            return redirect(url_for("admin.two_factor"))
    return render_template("admin/two_factor.html", off=form, enabled=True)
