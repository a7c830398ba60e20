"""Campaign lifecycle: start (or schedule), pause, resume, cancel, publish, test mail.

Drafts are made and edited in ``editing.py`` and progress is counted in
``progress.py``; both are re-exported here, so callers have one service.
Each public function that writes is one transaction (``@transactional``).
Changes made in the console pass ``actor``: their audit entry is written in
the same transaction as the change. The command line passes none (not audited).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import current_app
from flask_babel import force_locale
from sqlalchemy import func, insert, literal, select, update

from ..database import allow_long_statements
from ..extensions import db
from ..models import (
    OutboxKind,
    OutboxMessage,
    OutboxStatus,
    StaffUser,
    Subscription,
    SubscriptionStatus,
    utcnow,
)
from ..models.campaigns import Campaign, CampaignStatus, Delivery, DeliveryStatus
from ..staff import audit
from ..transaction import transactional
from .compose import RenderedCampaign, render_campaign, store_renderings
from .editing import (
    EDITABLE,
    MAX_BODY,
    MAX_SENDER,
    MAX_SUBJECT,
    CampaignStateError,
    create_campaign,
    locked_campaign,
    update_campaign,
)
from .progress import CampaignProgress, campaign_progress
from .recipients import layout_languages

__all__ = [
    "EDITABLE",
    "MAX_BODY",
    "MAX_SENDER",
    "MAX_SUBJECT",
    "CampaignProgress",
    "CampaignStateError",
    "StartResult",
    "campaign_progress",
    "cancel_campaign",
    "create_campaign",
    "pause_campaign",
    "queue_test_mail",
    "render_campaign",
    "render_in_mail_language",
    "resume_campaign",
    "set_public",
    "start_campaign",
    "start_due_campaigns",
    "update_campaign",
]


class StartResult(int):
    """What a start did: the deliveries it queued (the int itself, 0 when
    scheduled), the campaign's new status, and when it is scheduled for.

    An int, so a caller that only counts recipients compares it as one.
    """

    status: CampaignStatus
    scheduled_at: datetime | None

    def __new__(
        cls, queued: int, status: CampaignStatus, scheduled_at: datetime | None = None
    ) -> StartResult:
        """The result of queuing ``queued`` deliveries, ending in ``status``."""
        result = super().__new__(cls, queued)
        result.status, result.scheduled_at = status, scheduled_at
        return result

    @property
    def queued(self) -> int:
        """Deliveries queued (0 when scheduled or when nobody is subscribed)."""
        return int(self)

    @property
    def scheduled(self) -> bool:
        """True when the campaign now waits for ``scheduled_at``."""
        return self.status == CampaignStatus.SCHEDULED


@transactional
def start_campaign(
    campaign_id: int,
    at: datetime | None = None,
    *,
    actor: StaffUser | None = None,
    ip: str | None = None,
) -> StartResult:
    """Start now (enqueue every active subscriber) or schedule for ``at``.

    The result says which happened: how many deliveries were queued (0 when
    scheduled) and the campaign's new status.
    """
    campaign = locked_campaign(campaign_id)
    if campaign.status not in EDITABLE:
        raise CampaignStateError(f"campaign {campaign_id} is {campaign.status}")
    before = str(campaign.status)
    if at is not None and at > utcnow():
        campaign.status = CampaignStatus.SCHEDULED
        campaign.scheduled_at = at
        _audit_status(actor, "campaign.schedule", campaign, before, ip, at=at.isoformat())
        return StartResult(0, CampaignStatus.SCHEDULED, at)
    queued = _begin_sending(campaign)
    _audit_status(actor, "campaign.start", campaign, before, ip, queued=queued)
    return StartResult(queued, campaign.status)


@transactional
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
    allow_long_statements()  # one statement for the whole list
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


@transactional
def pause_campaign(
    campaign_id: int, *, actor: StaffUser | None = None, ip: str | None = None
) -> None:
    """Stop handing out batches; the batch in flight finishes."""
    campaign = locked_campaign(campaign_id)
    _change_status(campaign, {CampaignStatus.SENDING, CampaignStatus.SCHEDULED}, actor, ip)


@transactional
def resume_campaign(
    campaign_id: int, *, actor: StaffUser | None = None, ip: str | None = None
) -> None:
    """Continue a paused campaign where it stopped."""
    campaign = locked_campaign(campaign_id)
    _change_status(campaign, {CampaignStatus.PAUSED}, actor, ip)


@transactional
def cancel_campaign(
    campaign_id: int, *, actor: StaffUser | None = None, ip: str | None = None
) -> None:
    """Stop for good: queued deliveries become cancelled."""
    campaign = locked_campaign(campaign_id)
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
    """Pause (from sending or scheduled), resume (to where it was) or cancel."""
    if campaign.status not in allowed:
        raise CampaignStateError(f"campaign {campaign.id} is {campaign.status}")
    before = str(campaign.status)
    if cancel:
        campaign.status, campaign.finished_at = CampaignStatus.CANCELLED, utcnow()
        # Rows in a worker's batch keep their lease: the worker still records
        # the ones it sends before it finishes the batch (fenced by that lease).
        db.session.execute(
            update(Delivery)
            .where(Delivery.campaign_id == campaign.id, Delivery.status == DeliveryStatus.QUEUED)
            .values(status=DeliveryStatus.CANCELLED)
        )
        action = "campaign.cancel"
    elif campaign.status == CampaignStatus.PAUSED:
        # Paused while still scheduled: back to waiting for its time.
        started = campaign.started_at is not None
        campaign.status = CampaignStatus.SENDING if started else CampaignStatus.SCHEDULED
        action = "campaign.resume"
    else:
        campaign.status, action = CampaignStatus.PAUSED, "campaign.pause"
    if not cancel:  # a staff pause or resume: no automatic reason applies (any longer)
        campaign.pause_reason = None
    _audit_status(actor, action, campaign, before, ip)


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


@transactional
def set_public(campaign_id: int, public: bool, *, actor: StaffUser, ip: str | None = None) -> None:
    """Show the campaign in the public archive (once sent), or hide it."""
    campaign = locked_campaign(campaign_id)
    if campaign.is_public != public:
        campaign.is_public = public
        details = {"public": {"before": not public, "after": public}}
        audit.record(actor, "campaign.public", "campaign", campaign_id, details=details, ip=ip)


@transactional
def queue_test_mail(
    campaign_id: int, recipient: StaffUser, *, locale: str | None = None, ip: str | None = None
) -> bool:
    """Put a test of the campaign for ``recipient`` in the outbox.

    The worker sends it like every mail, with its layout in ``locale`` (the
    console's language; default: the app's). False when one is still queued
    for this person and campaign (a double click sends one test, not two).
    """
    campaign = locked_campaign(campaign_id)
    waiting = db.session.scalars(
        select(OutboxMessage.payload).where(
            OutboxMessage.kind == OutboxKind.CAMPAIGN_TEST,
            OutboxMessage.staff_user_id == recipient.id,
            OutboxMessage.status == OutboxStatus.QUEUED,
        )
    ).all()
    if any(payload.get("campaign") == campaign.id for payload in waiting):
        return False
    db.session.add(
        OutboxMessage(
            kind=OutboxKind.CAMPAIGN_TEST,
            staff_user_id=recipient.id,
            payload={"campaign": campaign.id, **({"locale": locale} if locale else {})},
            next_attempt_at=utcnow(),
        )
    )
    audit.record(recipient, "campaign.test_mail", "campaign", campaign.id, ip=ip)
    return True
