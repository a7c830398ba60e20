"""Campaign lifecycle: create, start (or schedule), pause, resume, cancel, status."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from email.utils import parseaddr

from email_validator import EmailNotValidError, validate_email
from flask import current_app
from sqlalchemy import func, insert, literal, select, update

from ..extensions import db
from ..models import MailingList, Subscription, SubscriptionStatus, utcnow
from ..models.campaigns import Campaign, CampaignStatus, Delivery, DeliveryStatus
from ..subscriptions.validation import CONTROL_CHARACTERS, InvalidInput
from .compose import render_campaign

MAX_SUBJECT = 200
MAX_BODY = 500_000


class CampaignStateError(Exception):
    """The requested change does not apply to the campaign's current state."""


def create_campaign(
    list_slug: str, subject: str, body_markdown: str, sender: str | None = None
) -> Campaign:
    """Create a draft campaign and commit."""
    subject = subject.strip()
    if not subject or len(subject) > MAX_SUBJECT:
        raise InvalidInput("subject", f"Give a subject of 1 to {MAX_SUBJECT} characters.")
    if CONTROL_CHARACTERS.search(subject):
        raise InvalidInput("subject", "The subject contains control characters.")
    if not body_markdown.strip() or len(body_markdown) > MAX_BODY:
        raise InvalidInput("body", f"Give a body of 1 to {MAX_BODY} characters.")
    mailing_list = db.session.scalar(select(MailingList).where(MailingList.slug == list_slug))
    if mailing_list is None or mailing_list.archived_at is not None:
        raise InvalidInput("list", f"Unknown list: {list_slug}.")
    sender = (sender or current_app.config["MAIL_DEFAULT_SENDER"]).strip()
    if CONTROL_CHARACTERS.search(sender):
        raise InvalidInput("sender", "The sender contains control characters.")
    try:
        # Syntax only: the operator's own domain may be a special-use one (.test).
        validate_email(
            parseaddr(sender)[1],
            check_deliverability=False,
            globally_deliverable=False,
            test_environment=True,
        )
    except EmailNotValidError as exc:
        raise InvalidInput("sender", f"The sender needs a valid address ({exc}).") from exc
    campaign = Campaign(
        list_id=mailing_list.id, subject=subject, body_markdown=body_markdown, sender=sender
    )
    db.session.add(campaign)
    db.session.commit()
    return campaign


def _locked(campaign_id: int) -> Campaign:
    campaign = db.session.scalar(
        select(Campaign).where(Campaign.id == campaign_id).with_for_update()
    )
    if campaign is None:
        raise LookupError(f"no campaign {campaign_id}")
    return campaign


def start_campaign(campaign_id: int, at: datetime | None = None) -> int:
    """Start now (enqueue every active subscriber) or schedule for ``at``.

    Returns the number of deliveries queued (0 when scheduled).
    """
    campaign = _locked(campaign_id)
    if campaign.status not in (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED):
        raise CampaignStateError(f"campaign {campaign_id} is {campaign.status}")
    if at is not None and at > utcnow():
        campaign.status = CampaignStatus.SCHEDULED
        campaign.scheduled_at = at
        db.session.commit()
        return 0
    queued = _begin_sending(campaign)
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
    """Render once and create one delivery per active subscriber, set-based."""
    rendered = render_campaign(campaign.subject, campaign.body_markdown, campaign.mailing_list.name)
    campaign.rendered_html, campaign.rendered_text = rendered.html, rendered.text
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


def pause_campaign(campaign_id: int) -> None:
    """Stop handing out batches; the batch in flight finishes."""
    _transition(
        campaign_id, {CampaignStatus.SENDING, CampaignStatus.SCHEDULED}, CampaignStatus.PAUSED
    )


def resume_campaign(campaign_id: int) -> None:
    """Continue a paused campaign where it stopped."""
    campaign = _locked(campaign_id)
    if campaign.status != CampaignStatus.PAUSED:
        raise CampaignStateError(f"campaign {campaign_id} is {campaign.status}")
    if campaign.started_at is None:  # paused while still scheduled
        campaign.status = CampaignStatus.SCHEDULED
    else:
        campaign.status = CampaignStatus.SENDING
    db.session.commit()


def cancel_campaign(campaign_id: int) -> None:
    """Stop for good: queued deliveries become cancelled."""
    campaign = _locked(campaign_id)
    if campaign.status in (CampaignStatus.DONE, CampaignStatus.CANCELLED):
        raise CampaignStateError(f"campaign {campaign_id} is {campaign.status}")
    campaign.status = CampaignStatus.CANCELLED
    campaign.finished_at = utcnow()
    db.session.execute(
        update(Delivery)
        .where(Delivery.campaign_id == campaign_id, Delivery.status == DeliveryStatus.QUEUED)
        .values(status=DeliveryStatus.CANCELLED, lease_until=None)
    )
    db.session.commit()


def _transition(campaign_id: int, allowed: set[CampaignStatus], to: CampaignStatus) -> None:
    campaign = _locked(campaign_id)
    if campaign.status not in allowed:
        raise CampaignStateError(f"campaign {campaign_id} is {campaign.status}")
    campaign.status = to
    db.session.commit()


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
