"""Staff console: campaigns (routes are added to the admin blueprint here).

Everyone may look; editors compose, test, start, pause, resume, cancel and
publish. This module has the list, the compose form and the campaign page;
campaign_preview.py the live preview, campaign_control.py the buttons.
"""

from __future__ import annotations

from typing import Any

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import func, select
from sqlalchemy.orm import joinedload

from ..campaigns import service
from ..campaigns.sample import campaign_sample, neutral_link
from ..extensions import db
from ..models import Campaign, CampaignStatus, Role, Subscription, SubscriptionStatus, utcnow
from ..subscriptions.lists import open_lists
from ..validation import InvalidInput
from . import bp
from .access import client_ip, requires, staff
from .campaign_forms import CampaignForm, ScheduleForm
from .pagination import requested_page

# The compose form and the preview carry a Markdown body of up to MAX_BODY
# characters, far above the app's MAX_CONTENT_LENGTH for ordinary forms. URL
# encoding takes up to 9 bytes for a character outside ASCII.
BIG_FORM_ENDPOINTS = frozenset(
    {"admin.campaign_new", "admin.campaign_edit", "admin.campaign_preview_draft"}
)
BIG_FORM_BYTES = 9 * service.MAX_BODY + 64 * 1024


@bp.before_app_request
def _allow_big_drafts() -> None:
    """Raise the body limit for the compose and preview POSTs of logged-in staff.

    This runs before the blueprint's CSRF check, which is what first reads the
    form; anonymous requests keep the app's small limit.
    """
    if request.endpoint in BIG_FORM_ENDPOINTS and current_user.is_authenticated:
        request.max_content_length = BIG_FORM_BYTES
        request.max_form_memory_size = BIG_FORM_BYTES


def loaded(campaign_id: int) -> Campaign:
    """The campaign or 404."""
    return db.session.get(Campaign, campaign_id) or abort(404)


def staff_sample(campaign: Campaign) -> tuple[str, str]:
    """HTML and text as a recipient sees them, with the logged-in staff member's
    name as theirs and neutral links (see campaigns.sample.neutral_link)."""
    return campaign_sample(campaign, name=staff().name, link=neutral_link(campaign.mailing_list))


@bp.route("/campaigns")
@requires(Role.VIEWER)
def campaigns() -> ResponseReturnValue:
    """Every campaign, newest first."""
    page = requested_page(50)
    rows = db.session.scalars(
        select(Campaign)
        .options(joinedload(Campaign.mailing_list))
        .order_by(Campaign.id.desc())
        .offset(page.offset)
        .limit(page.size + 1)
    ).all()
    return render_template(
        "admin/campaign_index.html",
        campaigns=rows[: page.size],
        has_next=len(rows) > page.size,
        page=page,
    )


def _compose_form(campaign: Campaign | None = None) -> CampaignForm:
    """The compose form with the open lists (and the campaign's own) as choices."""
    # The form's "body" is the campaign's body_markdown (obj covers the rest).
    form = CampaignForm(obj=campaign, **({"body": campaign.body_markdown} if campaign else {}))
    choices = [(m.slug, m.name) for m in open_lists()]
    if campaign is not None:
        if not form.is_submitted():
            form.list_slug.data = campaign.mailing_list.slug
        if campaign.mailing_list.archived_at is not None:
            own = campaign.mailing_list
            choices.append((own.slug, _("%(name)s (archived)", name=own.name)))
    form.list_slug.choices = choices
    return form


@bp.route("/campaigns/new", methods=["GET", "POST"])
@requires(Role.EDITOR)
def campaign_new() -> ResponseReturnValue:
    """Write a new draft in Markdown, with a live preview."""
    form = _compose_form()
    if not form.is_submitted():
        form.sender.data = current_app.config["MAIL_DEFAULT_SENDER"]
    if form.validate_on_submit():
        try:
            campaign = service.create_campaign(**_fields(form), actor=staff(), ip=client_ip())
        except InvalidInput as exc:
            _field_error(form, exc)
        else:
            flash(_("The draft is saved."), "success")
            return redirect(url_for("admin.campaign_detail", campaign_id=campaign.id))
    return render_template("admin/campaign_form.html", form=form, campaign=None)


@bp.route("/campaigns/<id:campaign_id>/edit", methods=["GET", "POST"])
@requires(Role.EDITOR)
def campaign_edit(campaign_id: int) -> ResponseReturnValue:
    """Edit a draft or scheduled campaign; refused (409) once it has started."""
    campaign = loaded(campaign_id)
    if campaign.status not in service.EDITABLE:
        return _locked_page(campaign), 409
    form = _compose_form(campaign)
    if form.validate_on_submit():
        try:
            service.update_campaign(campaign_id, **_fields(form), actor=staff(), ip=client_ip())
        except InvalidInput as exc:
            _field_error(form, exc)
        except service.CampaignStateError:
            return _locked_page(loaded(campaign_id)), 409
        else:
            flash(_("The draft is saved."), "success")
            return redirect(url_for("admin.campaign_detail", campaign_id=campaign_id))
    return render_template(
        "admin/campaign_form.html",
        form=form,
        campaign=campaign,
        preview_text=staff_sample(campaign)[1],
    )


def _locked_page(campaign: Campaign) -> str:
    """The campaign page with the reason an edit was refused."""
    reason = _(
        "This campaign is %(status)s and can no longer be edited. Subject and sender are read "
        "each time a batch is sent, and the body was fixed when sending started.",
        status=campaign.status,
    )
    return detail_page(campaign, refusal=reason)


def _fields(form: CampaignForm) -> dict[str, Any]:
    """The service's arguments from a validated compose form."""
    return {
        "list_slug": form.list_slug.data or "",
        "subject": form.subject.data or "",
        "sender": form.sender.data or "",
        "body_markdown": (form.body.data or "").replace("\r\n", "\n"),
    }


def _field_error(form: CampaignForm, exc: InvalidInput) -> None:
    """Show a service's refusal next to its field."""
    name = {"list": "list_slug", "body": "body"}.get(exc.field, exc.field)
    field = getattr(form, name, None)
    if field is None:
        form.form_errors.append(exc.message)
    else:
        field.errors = [*field.errors, exc.message]


@bp.route("/campaigns/<id:campaign_id>")
@requires(Role.VIEWER)
def campaign_detail(campaign_id: int) -> ResponseReturnValue:
    """A campaign: its content, progress and (for editors) its controls."""
    return detail_page(loaded(campaign_id))


def detail_page(
    campaign: Campaign, *, schedule: ScheduleForm | None = None, refusal: str = ""
) -> str:
    """Render the campaign page (also used to show a refused action's reason)."""
    progress = None
    if campaign.status not in (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED) or (
        campaign.started_at is not None
    ):
        progress = service.campaign_progress(campaign.id)
    audience = db.session.scalar(
        select(func.count())
        .select_from(Subscription)
        .where(
            Subscription.list_id == campaign.list_id,
            Subscription.status == SubscriptionStatus.ACTIVE,
        )
    )
    return render_template(
        "admin/campaign_detail.html",
        campaign=campaign,
        progress=progress,
        audience=audience or 0,
        schedule=schedule or ScheduleForm(),
        refusal=refusal,
        preview_text=staff_sample(campaign)[1],
        now=utcnow().strftime("%Y-%m-%d %H:%M"),
    )
