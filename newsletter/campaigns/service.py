"""Campaign lifecycle: create, edit, start (or schedule), pause, resume, cancel, status.

Changes made in the console pass ``actor``: their audit entry is written in
the same transaction as the change. The command line passes none (not audited).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from datetime import datetime
from email.utils import parseaddr
from typing import Any

from email_validator import EmailNotValidError, validate_email
from flask import current_app
from flask_babel import force_locale
from sqlalchemy import func, insert, literal, select, update

from ..extensions import db
from ..models import (
    MailingList,
    OutboxKind,
    OutboxMessage,
    OutboxStatus,
    StaffUser,
    Subscription,
    SubscriptionStatus,
    utcnow,
)
from ..models.campaigns import Campaign, CampaignStatus, Delivery, DeliveryStatus
from ..service_messages import page_gettext as _
from ..staff import audit
from ..subscriptions.validation import CONTROL_CHARACTERS, InvalidInput
from .compose import RenderedCampaign, render_campaign, store_renderings
from .recipients import layout_languages

MAX_SUBJECT = 200
MAX_BODY = 500_000
MAX_SENDER = 320


class CampaignStateError(Exception):
    """The requested change does not apply to the campaign's current state."""


def create_campaign(
    list_slug: str,
    subject: str,
    body_markdown: str,
    sender: str | None = None,
    *,
    actor: StaffUser | None = None,
    ip: str | None = None,
) -> Campaign:
    """Create a draft campaign and commit."""
    mailing_list, subject, sender = _checked(list_slug, subject, body_markdown, sender)
    campaign = Campaign(
        list_id=mailing_list.id, subject=subject, body_markdown=body_markdown, sender=sender
    )
    db.session.add(campaign)
    db.session.flush()
    if actor is not None:
        details = _snapshot(campaign, mailing_list.slug)
        audit.record(actor, "campaign.create", "campaign", campaign.id, details=details, ip=ip)
    db.session.commit()
    return campaign


EDITABLE = (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED)


def update_campaign(
    campaign_id: int,
    *,
    list_slug: str,
    subject: str,
    body_markdown: str,
    sender: str,
    actor: StaffUser,
    ip: str | None = None,
) -> Campaign:
    """Change a draft or scheduled campaign and commit; audited with before/after.

    Refused once sending has started: the worker reads subject and sender for
    every batch, so an edit then would change mails half-way through a send.
    """
    campaign = _locked(campaign_id)
    if campaign.status not in EDITABLE:
        raise CampaignStateError(f"campaign {campaign_id} is {campaign.status}")
    before = _snapshot(campaign, campaign.mailing_list.slug)
    mailing_list, subject, sender = _checked(list_slug, subject, body_markdown, sender)
    campaign.list_id, campaign.mailing_list = mailing_list.id, mailing_list
    campaign.subject, campaign.sender, campaign.body_markdown = subject, sender, body_markdown
    changed = audit.changes(before, _snapshot(campaign, mailing_list.slug))
    if changed:
        audit.record(actor, "campaign.update", "campaign", campaign_id, details=changed, ip=ip)
    db.session.commit()
    return campaign


def _checked(
    list_slug: str, subject: str, body_markdown: str, sender: str | None
) -> tuple[MailingList, str, str]:
    """Validate a campaign's fields: (its open list, subject, sender)."""
    subject = subject.strip()
    if not subject or len(subject) > MAX_SUBJECT:
        raise InvalidInput(
            "subject", _("Give a subject of 1 to %(max)s characters.", max=MAX_SUBJECT)
        )
    if CONTROL_CHARACTERS.search(subject):
        raise InvalidInput("subject", _("The subject contains control characters."))
    if not body_markdown.strip() or len(body_markdown) > MAX_BODY:
        raise InvalidInput("body", _("Give a body of 1 to %(max)s characters.", max=MAX_BODY))
    mailing_list = db.session.scalar(select(MailingList).where(MailingList.slug == list_slug))
    if mailing_list is None or mailing_list.archived_at is not None:
        raise InvalidInput("list", _("Unknown list: %(slug)s.", slug=list_slug))
    sender = (sender or current_app.config["MAIL_DEFAULT_SENDER"]).strip()
    if CONTROL_CHARACTERS.search(sender) or len(sender) > MAX_SENDER:
        raise InvalidInput("sender", _("The sender is too long or contains control characters."))
    try:
        # Syntax only: the operator's own domain may be a special-use one (.test).
        validate_email(
            parseaddr(sender)[1],
            check_deliverability=False,
            globally_deliverable=False,
            test_environment=True,
        )
    except EmailNotValidError as exc:
        raise InvalidInput(
            "sender", _("The sender needs a valid address (%(reason)s).", reason=exc)
        ) from exc
    return mailing_list, subject, sender


def _snapshot(campaign: Campaign, list_slug: str) -> dict[str, Any]:
    """The audited fields; the body as its size and digest (it may be 500 kB)."""
    digest = hashlib.sha256(campaign.body_markdown.encode()).hexdigest()[:16]
    return {
        "list": list_slug,
        "subject": campaign.subject,
        "sender": campaign.sender,
        "body": f"{len(campaign.body_markdown)} chars, sha256 {digest}",
    }


def _locked(campaign_id: int) -> Campaign:
    campaign = db.session.scalar(
        select(Campaign).where(Campaign.id == campaign_id).with_for_update()
    )
    if campaign is None:
        raise LookupError(f"no campaign {campaign_id}")
    return campaign


def start_campaign(
    campaign_id: int,
    at: datetime | None = None,
    *,
    actor: StaffUser | None = None,
    ip: str | None = None,
) -> int:
    """Start now (enqueue every active subscriber) or schedule for ``at``.

    Returns the number of deliveries queued (0 when scheduled).
    """
    campaign = _locked(campaign_id)
    if campaign.status not in EDITABLE:
        raise CampaignStateError(f"campaign {campaign_id} is {campaign.status}")
    before = str(campaign.status)
    if at is not None and at > utcnow():
        campaign.status = CampaignStatus.SCHEDULED
        campaign.scheduled_at = at
        _audit_status(actor, "campaign.schedule", campaign, before, ip, at=at.isoformat())
        db.session.commit()
        return 0
    queued = _begin_sending(campaign)
    _audit_status(actor, "campaign.start", campaign, before, ip, queued=queued)
    db.session.commit()
    return queued


def start_due_campaigns() -> int:
    """Start scheduled campaigns whose time has come (any worker may call this)."""
    query = (
        select(Campaign)
        .where(Campaign.status == CampaignStatus.SCHEDULED, Campaign.scheduled_at <= utcnow())
        .with_for_update(skip_locked=True)
    )
    started = 0
    for campaign in db.session.scalars(query).all():
        _begin_sending(campaign)
        started += 1
    db.session.commit()
    return started


def _begin_sending(campaign: Campaign) -> int:
    """Render once per layout language the recipients read, and create one
    delivery per active subscriber, set-based."""
    languages = layout_languages(campaign.list_id)
    store_renderings(
        campaign, {code: render_in_mail_language(campaign, code) for code in languages}
    )
    campaign.status = CampaignStatus.SENDING
    campaign.started_at = utcnow()
    now = utcnow()
    recipients = select(
        literal(campaign.id),
        Subscription.subscriber_id,
        literal(DeliveryStatus.QUEUED.value),
        literal(0),
        literal(now, type_=Delivery.__table__.c.next_attempt_at.type),
    ).where(
        Subscription.list_id == campaign.list_id, Subscription.status == SubscriptionStatus.ACTIVE
    )
    statement = insert(Delivery).from_select(
        ["campaign_id", "subscriber_id", "status", "attempts", "next_attempt_at"], recipients
    )
    db.session.execute(statement)
    # Counted rather than taken from rowcount, which SQLAlchemy with psycopg
    # reports as -1 for INSERT ... SELECT; the (campaign_id, status) index serves it.
    queued = (
        db.session.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.campaign_id == campaign.id)
        )
        or 0
    )
    if queued == 0:  # nobody to send to: done at once
        campaign.status = CampaignStatus.DONE
        campaign.finished_at = now
    return queued


def render_in_mail_language(campaign: Campaign, locale: str | None = None) -> RenderedCampaign:
    """Render a campaign with its layout in ``locale`` (default: the app's default
    language), whoever starts it from where.

    A start from the console runs inside a staff member's request, whose
    browser language must not decide the language of the mail's layout.
    """
    with force_locale(locale or current_app.config["BABEL_DEFAULT_LOCALE"]):
        return render_campaign(campaign.subject, campaign.body_markdown, campaign.mailing_list.name)


def pause_campaign(
    campaign_id: int, *, actor: StaffUser | None = None, ip: str | None = None
) -> None:
    """Stop handing out batches; the batch in flight finishes."""
    campaign = _locked(campaign_id)
    _change_status(campaign, {CampaignStatus.SENDING, CampaignStatus.SCHEDULED}, actor, ip)


def resume_campaign(
    campaign_id: int, *, actor: StaffUser | None = None, ip: str | None = None
) -> None:
    """Continue a paused campaign where it stopped."""
    campaign = _locked(campaign_id)
    _change_status(campaign, {CampaignStatus.PAUSED}, actor, ip)


def cancel_campaign(
    campaign_id: int, *, actor: StaffUser | None = None, ip: str | None = None
) -> None:
    """Stop for good: queued deliveries become cancelled."""
    campaign = _locked(campaign_id)
    allowed = set(CampaignStatus) - {CampaignStatus.DONE, CampaignStatus.CANCELLED}
    _change_status(campaign, allowed, actor, ip, cancel=True)


def _change_status(
    campaign: Campaign,
    allowed: set[CampaignStatus],
    actor: StaffUser | None,
    ip: str | None,
    *,
    cancel: bool = False,
) -> None:
    """Pause (from sending or scheduled), resume (to where it was) or cancel; commit."""
    if campaign.status not in allowed:
        raise CampaignStateError(f"campaign {campaign.id} is {campaign.status}")
    before = str(campaign.status)
    if cancel:
        campaign.status, campaign.finished_at = CampaignStatus.CANCELLED, utcnow()
        db.session.execute(
            update(Delivery)
            .where(Delivery.campaign_id == campaign.id, Delivery.status == DeliveryStatus.QUEUED)
            .values(status=DeliveryStatus.CANCELLED, lease_until=None)
        )
        action = "campaign.cancel"
    elif campaign.status == CampaignStatus.PAUSED:
        # Paused while still scheduled: back to waiting for its time.
        started = campaign.started_at is not None
        campaign.status = CampaignStatus.SENDING if started else CampaignStatus.SCHEDULED
        action = "campaign.resume"
    else:
        campaign.status, action = CampaignStatus.PAUSED, "campaign.pause"
    _audit_status(actor, action, campaign, before, ip)
    db.session.commit()


def _audit_status(
    actor: StaffUser | None,
    action: str,
    campaign: Campaign,
    before: str,
    ip: str | None,
    **extra: Any,
) -> None:
    """Audit a status change (console only; the command line passes no actor)."""
    if actor is not None:
        details = {"status": {"before": before, "after": str(campaign.status)}, **extra}
        audit.record(actor, action, "campaign", campaign.id, details=details, ip=ip)


def set_public(campaign_id: int, public: bool, *, actor: StaffUser, ip: str | None = None) -> None:
    """Show the campaign in the public archive (once sent), or hide it; commit."""
    campaign = _locked(campaign_id)
    if campaign.is_public != public:
        campaign.is_public = public
        details = {"public": {"before": not public, "after": public}}
        audit.record(actor, "campaign.public", "campaign", campaign_id, details=details, ip=ip)
    db.session.commit()


def queue_test_mail(campaign_id: int, recipient: StaffUser, *, ip: str | None = None) -> bool:
    """Put a test of the campaign for ``recipient`` in the outbox; commit.

    The worker sends it like every mail. False when one is still queued for
    this person and campaign (a double click sends one test, not two).
    """
    campaign = _locked(campaign_id)
    waiting = db.session.scalars(
        select(OutboxMessage.payload).where(
            OutboxMessage.kind == OutboxKind.CAMPAIGN_TEST,
            OutboxMessage.staff_user_id == recipient.id,
            OutboxMessage.status == OutboxStatus.QUEUED,
        )
    ).all()
    if any(payload.get("campaign") == campaign.id for payload in waiting):
        db.session.commit()
        return False
    db.session.add(
        OutboxMessage(
            kind=OutboxKind.CAMPAIGN_TEST,
            staff_user_id=recipient.id,
            payload={"campaign": campaign.id},
            next_attempt_at=utcnow(),
        )
    )
    audit.record(recipient, "campaign.test_mail", "campaign", campaign.id, ip=ip)
    db.session.commit()
    return True


@dataclass(frozen=True)
class CampaignProgress:
    """Counts and pace for one campaign."""

    id: int
    status: str
    total: int
    queued: int
    sent: int
    failed: int
    skipped: int
    cancelled: int
    rate: float  # messages per second since the start
    eta_seconds: float | None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return asdict(self)


def campaign_progress(campaign_id: int) -> CampaignProgress:
    """Counts by delivery status, the average rate so far and the time left."""
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None:
        raise LookupError(f"no campaign {campaign_id}")
    counts = dict(
        db.session.execute(
            select(Delivery.status, func.count())
            .where(Delivery.campaign_id == campaign_id)
            .group_by(Delivery.status)
        ).all()
    )
    sent = counts.get(DeliveryStatus.SENT, 0)
    queued = counts.get(DeliveryStatus.QUEUED, 0)
    rate = 0.0
    if campaign.started_at and sent:
        end = campaign.finished_at or utcnow()
        elapsed = max((end - campaign.started_at).total_seconds(), 1e-3)
        rate = sent / elapsed
    eta = queued / rate if rate and queued else (0.0 if not queued else None)
    return CampaignProgress(
        id=campaign.id,
        status=str(campaign.status),
        total=sum(counts.values()),
        queued=queued,
        sent=sent,
        failed=counts.get(DeliveryStatus.FAILED, 0),
        skipped=counts.get(DeliveryStatus.SKIPPED, 0),
        cancelled=counts.get(DeliveryStatus.CANCELLED, 0),
        rate=round(rate, 1),
        eta_seconds=round(eta, 1) if eta is not None else None,
    )
