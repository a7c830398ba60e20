"""Owners manage staff accounts and console settings."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _

from ..models import Role
from ..staff import service, totp
from ..staff.passwords import generate_password
from ..validation import InvalidInput
from . import bp
from .access import client_ip, requires, staff
from .forms import ConfirmForm, SettingsForm, StaffCreateForm, StaffEditForm


@bp.route("/staff")
@requires(Role.OWNER)
def staff_list() -> ResponseReturnValue:
    """Every account, and the console-wide settings."""
    settings = SettingsForm(require_two_factor=service.two_factor_required())
    return render_template("admin/staff_list.html", users=service.list_staff(), settings=settings)


@bp.route("/staff/new", methods=["GET", "POST"])
@requires(Role.OWNER)
def staff_new() -> ResponseReturnValue:
    """Create an account; a generated password is shown once."""
    form = StaffCreateForm()
    if form.validate_on_submit():
        password = form.password.data or generate_password()
        try:
            user = service.create_staff(
                form.email.data or "",
                Role(form.role.data),
                password,
                name=form.name.data or "",
                actor=staff(),
                ip=client_ip(),
            )
        except InvalidInput as exc:
            getattr(form, exc.field).errors = [exc.message]
        else:
            shown = None if form.password.data else password
            return render_template("admin/staff_created.html", user=user, password=shown)
    return render_template("admin/staff_new.html", form=form)


@bp.route("/staff/<id:staff_id>", methods=["GET", "POST"])
@requires(Role.OWNER)
def staff_edit(staff_id: int) -> ResponseReturnValue:
    """Change an account's name, role or status."""
    user = service.get_staff(staff_id) or abort(404)
    form = StaffEditForm(obj=user)
    if form.validate_on_submit():
        try:
            service.update_staff(
                user,
                role=Role(form.role.data),
                is_active=bool(form.is_active.data),
                name=form.name.data or "",
                actor=staff(),
                ip=client_ip(),
            )
        except InvalidInput as exc:
            getattr(form, exc.field).errors = [exc.message]
        else:
            flash(_("The account is saved."), "success")
            return redirect(url_for("admin.staff_list"))
    return render_template("admin/staff_edit.html", form=form, user=user, reset=ConfirmForm())


@bp.route("/staff/<id:staff_id>/reset-two-factor", methods=["POST"])
@requires(Role.OWNER)
def staff_reset_two_factor(staff_id: int) -> ResponseReturnValue:
    """Turn off someone's two-factor login (a lost phone); they set it up again."""
    user = service.get_staff(staff_id) or abort(404)
    if ConfirmForm().validate_on_submit():
        totp.disable(user, actor=staff(), ip=client_ip())
        flash(_("Two-factor login is reset for %(email)s.", email=user.email), "info")
    return redirect(url_for("admin.staff_edit", staff_id=staff_id))


@bp.route("/settings", methods=["POST"])
@requires(Role.OWNER)
def settings() -> ResponseReturnValue:
    """Save the console-wide settings."""
    form = SettingsForm()
    if form.validate_on_submit():
        service.set_two_factor_required(
            bool(form.require_two_factor.data), actor=staff(), ip=client_ip()
        )
        flash(_("Settings saved."), "success")
    return redirect(url_for("admin.staff_list"))
