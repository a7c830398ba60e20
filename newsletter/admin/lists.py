"""Staff console: lists (routes are added to the admin blueprint here).

Anyone may look; editors create, edit and archive. A changed consent text
becomes a new immutable version (see subscriptions.lists).
"""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from sqlalchemy import func, select

from ..extensions import db
from ..models import ConsentText, MailingList, Role, Subscription, SubscriptionStatus
from ..subscriptions import lists as service
from ..validation import InvalidInput
from . import bp
from .access import client_ip, requires, staff
from .list_forms import ListCreateForm, ListEditForm


@bp.context_processor
def _roles() -> dict[str, object]:
    """``Role`` in console templates, for ``current_user.may(Role.EDITOR)``."""
    return {"Role": Role}


def _overview() -> tuple[dict[int, int], dict[int, int]]:
    """Active subscribers and the consent version in force, per list id."""
    active = dict(
        db.session.execute(
            select(Subscription.list_id, func.count())
            .where(Subscription.status == SubscriptionStatus.ACTIVE)
            .group_by(Subscription.list_id)
        ).all()
    )
    versions = dict(
        db.session.execute(
            select(ConsentText.list_id, func.max(ConsentText.version)).group_by(ConsentText.list_id)
        ).all()
    )
    return active, versions


@bp.route("/lists")
@requires(Role.VIEWER)
def lists() -> ResponseReturnValue:
    """Every list, open ones first, with its subscribers and consent version."""
    active, versions = _overview()
    return render_template(
        "admin/list_index.html", lists=service.all_lists(), active=active, versions=versions
    )


@bp.route("/lists/new", methods=["GET", "POST"])
@requires(Role.EDITOR)
def list_new() -> ResponseReturnValue:
    """Create a list with version 1 of its consent text."""
    form = ListCreateForm()
    if form.validate_on_submit():
        try:
            created = service.create_list(
                form.slug.data or "",
                form.name.data or "",
                form.consent_text.data or "",
                form.description.data or "",
                default=bool(form.is_default.data),
                actor=staff(),
                ip=client_ip(),
            )
        except InvalidInput as exc:
            _field_error(form, exc)
        else:
            flash(_("The list %(name)s is created.", name=created.name), "success")
            return redirect(url_for("admin.list_detail", list_id=created.id))
    return render_template("admin/list_form.html", form=form, mailing_list=None, history=[])


def _loaded(list_id: int) -> MailingList:
    """The list or 404."""
    return service.get_list(list_id) or abort(404)


@bp.route("/lists/<id:list_id>")
@requires(Role.VIEWER)
def list_detail(list_id: int) -> ResponseReturnValue:
    """A list, the consent text in force and every earlier version."""
    mailing_list = _loaded(list_id)
    return render_template(
        "admin/list_detail.html",
        mailing_list=mailing_list,
        history=service.consent_history(list_id),
    )


@bp.route("/lists/<id:list_id>/edit", methods=["GET", "POST"])
@requires(Role.EDITOR)
def list_edit(list_id: int) -> ResponseReturnValue:
    """Edit name, description and default; a changed consent text is a new version."""
    mailing_list = _loaded(list_id)
    history = service.consent_history(list_id)
    form = ListEditForm(obj=mailing_list)
    if not form.is_submitted():
        form.consent_text.data = history[0][0].text if history else ""
    if form.validate_on_submit():
        try:
            version = service.update_list(
                list_id,
                name=form.name.data or "",
                description=form.description.data or "",
                default=bool(form.is_default.data),
                consent_text=form.consent_text.data or "",
                actor=staff(),
                ip=client_ip(),
            )
        except InvalidInput as exc:
            _field_error(form, exc)
        else:
            flash(_("The list is saved."), "success")
            if version is not None:
                flash(_("Consent text version %(n)s is now in force.", n=version.version), "info")
            return redirect(url_for("admin.list_detail", list_id=list_id))
    return render_template(
        "admin/list_form.html", form=form, mailing_list=mailing_list, history=history
    )


@bp.route("/lists/<id:list_id>/archive", methods=["POST"])
@requires(Role.EDITOR)
def list_archive(list_id: int) -> ResponseReturnValue:
    """Archive: no new signups or campaigns; subscribers and history stay."""
    return _set_archived(list_id, True)


@bp.route("/lists/<id:list_id>/unarchive", methods=["POST"])
@requires(Role.EDITOR)
def list_unarchive(list_id: int) -> ResponseReturnValue:
    """Reopen an archived list."""
    return _set_archived(list_id, False)


def _set_archived(list_id: int, archived: bool) -> ResponseReturnValue:
    """Shared by archive and unarchive: call the service, say what happened."""
    _loaded(list_id)
    try:
        service.set_archived(list_id, archived, actor=staff(), ip=client_ip())
    except InvalidInput as exc:
        flash(exc.message, "error")
    else:
        flash(_("The list is archived.") if archived else _("The list is open again."), "success")
    return redirect(url_for("admin.list_detail", list_id=list_id))


def _field_error(form: ListEditForm, exc: InvalidInput) -> None:
    """Show a service's refusal next to its field (or above the form)."""
    field = getattr(form, "is_default" if exc.field == "default" else exc.field, None)
    if field is None:
        form.form_errors.append(exc.message)
    else:
        field.errors = [*field.errors, exc.message]
