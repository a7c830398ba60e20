"""Deliverability figures: bounce, complaint and unsubscribe rates, per campaign
and over the last 30 days, and whether every unsubscribe took effect.

The definitions (each a count in SQL, so the figures hold on a database of
millions of deliveries; nothing is counted per person in Python):

- **sends**: deliveries sent (accepted by the mail server). Over the window,
  those whose ``sent_at`` is in it, read through the campaigns that were
  sending in it (the (campaign_id, status) index), not a scan of all
  deliveries; a row's ``sent_at`` is read only for campaigns started before
  the window.
- **refused**: hard bounces the mail server gave during the send (source
  ``smtp``): those deliveries failed and are not among the sends.
- **attempted**: sends + refused, the mails handed to the mail server.
- **hard / soft bounces, complaints**: bounce reports of that kind naming the
  campaign (per campaign) or received in the window (over the window), each
  person counted once per campaign (the same bounce from the mailbox and a
  webhook is one). A report naming no person counts on its own.
- **hard / soft bounce rate**: bounces / attempted; **complaint rate**:
  complaints / sends (only a delivered mail can be complained about), against
  the Gmail/Yahoo lines: keep it at or under 0.1 % (``TARGET``), never pass
  0.3 % (``LIMIT``).
- **unsubscribes**: over the window, the ledger's ``withdrawn`` events in it
  (one per list left; a complaint leaves every list). Per campaign, the
  recipients of a sent mail of the campaign who withdrew from its list after
  that mail and before any later mail of the list reached them: each
  withdrawal is attributed to the last mail of the list the person received
  before it, however long after. A person erased since is no longer counted
  (the ledger keeps no link to them).
- **unsubscribe rate**: unsubscribes / sends.
- **unsubscribe effect**: for every withdrawal in the window, the mails that
  still went to that person for that list after it: sent campaign deliveries
  of the list with no new confirmation or import for the list in between, and
  sent welcome or confirmation mails naming the list with no new signup,
  confirmation or import in between. The figure is
  the number of such mails (it must be 0) and the longest time from a
  withdrawal to a mail sent after it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    String,
    and_,
    case,
    cast,
    exists,
    func,
    literal,
    or_,
    select,
    union_all,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import aliased

from ..extensions import db
from ..models import (
    BounceKind,
    BounceReport,
    Campaign,
    ConsentEvent,
    ConsentEventType,
    Delivery,
    DeliveryStatus,
    OutboxKind,
    OutboxMessage,
    OutboxStatus,
    utcnow,
)

WINDOW_DAYS = 30
TARGET = 0.001  # Gmail/Yahoo: keep the complaint rate under 0.1 % ...
LIMIT = 0.003  # ... and never let it reach 0.3 %.
MAX_CAMPAIGNS = 50  # the most recent campaigns of the window the report lists
# Ledger events that give consent for a list again: campaign mail after one of
# them is not mail after the withdrawal before it; a confirmation or welcome
# mail also follows a new signup (requested).
RECONSENT = (ConsentEventType.CONFIRMED, ConsentEventType.IMPORTED)
SIGNED_UP_AGAIN = (ConsentEventType.REQUESTED, *RECONSENT)


def complaint_level(rate: float | None) -> str:
    """Where a complaint rate stands: "none" (nothing sent), "ok" (at or under
    0.1 %), "over_target" (over 0.1 %), "over_limit" (over 0.3 %)."""
    if rate is None:
        return "none"
    if rate > LIMIT:
        return "over_limit"
    if rate > TARGET:
        return "over_target"
    return "ok"


def _rate(count: int, of: int) -> float | None:
    return count / of if of else None


@dataclass(frozen=True)
class Figures:
    """Counts and rates of one campaign or of the window (see the module)."""

    sends: int = 0
    refused: int = 0
    hard_bounces: int = 0
    soft_bounces: int = 0
    complaints: int = 0
    unsubscribes: int = 0

    @property
    def attempted(self) -> int:
        """Mails handed to the mail server: sent, or refused by it."""
        return self.sends + self.refused

    @property
    def hard_bounce_rate(self) -> float | None:
        """Hard bounces per mail attempted (None before any)."""
        return _rate(self.hard_bounces, self.attempted)

    @property
    def soft_bounce_rate(self) -> float | None:
        """Soft bounces per mail attempted (None before any)."""
        return _rate(self.soft_bounces, self.attempted)

    @property
    def complaint_rate(self) -> float | None:
        """Complaints per mail sent (None before any)."""
        return _rate(self.complaints, self.sends)

    @property
    def unsubscribe_rate(self) -> float | None:
        """Unsubscribes per mail sent (None before any)."""
        return _rate(self.unsubscribes, self.sends)

    @property
    def complaint_level(self) -> str:
        """The complaint rate against the lines (see ``complaint_level``)."""
        return complaint_level(self.complaint_rate)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the counts, the rates and the complaint level."""
        return {
            **asdict(self),
            "attempted": self.attempted,
            "hard_bounce_rate": self.hard_bounce_rate,
            "soft_bounce_rate": self.soft_bounce_rate,
            "complaint_rate": self.complaint_rate,
            "unsubscribe_rate": self.unsubscribe_rate,
            "complaint_level": self.complaint_level,
        }


@dataclass(frozen=True)
class CampaignFigures:
    """One campaign's figures, with what the report shows of the campaign."""

    id: int
    subject: str
    status: str
    started_at: datetime | None
    pause_reason: dict[str, Any] | None
    figures: Figures

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "id": self.id,
            "subject": self.subject,
            "status": self.status,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "pause_reason": self.pause_reason,
            **self.figures.as_dict(),
        }


@dataclass(frozen=True)
class UnsubscribeEffect:
    """Mails that went to someone for a list after they withdrew from it."""

    withdrawals: int
    mails_after: int
    longest_gap_seconds: float | None

    @property
    def ok(self) -> bool:
        """True when no mail followed any withdrawal."""
        return self.mails_after == 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {**asdict(self), "ok": self.ok}


@dataclass(frozen=True)
class DeliverabilityReport:
    """The window's figures, the unsubscribe effect and the window's campaigns."""

    since: datetime
    window: Figures
    effect: UnsubscribeEffect
    campaigns: list[CampaignFigures] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (``newsletter report deliverability --json``)."""
        return {
            "window_days": WINDOW_DAYS,
            "since": self.since.isoformat(),
            "lines": {"target": TARGET, "limit": LIMIT},
            "window": self.window.as_dict(),
            "unsubscribe_effect": self.effect.as_dict(),
            "campaigns": [campaign.as_dict() for campaign in self.campaigns],
        }


def deliverability_report(now: datetime | None = None) -> DeliverabilityReport:
    """Everything the console page and the command show."""
    since = (now or utcnow()) - timedelta(days=WINDOW_DAYS)
    campaigns = db.session.scalars(
        select(Campaign)
        .where(
            Campaign.started_at.is_not(None),
            or_(
                Campaign.started_at >= since,
                Campaign.finished_at.is_(None),
                Campaign.finished_at >= since,
            ),
        )
        .order_by(Campaign.started_at.desc(), Campaign.id.desc())
        .limit(MAX_CAMPAIGNS)
    ).all()
    figures = campaign_figures([c.id for c in campaigns])
    return DeliverabilityReport(
        since=since,
        window=window_figures(since),
        effect=unsubscribe_effect(since),
        campaigns=[
            CampaignFigures(
                id=c.id,
                subject=c.subject,
                status=str(c.status),
                started_at=c.started_at,
                pause_reason=c.pause_reason,
                figures=figures.get(c.id, Figures()),
            )
            for c in campaigns
        ],
    )


def _person(campaign: bool) -> ColumnElement[str]:
    """What makes two reports one: the person (by digest), per campaign over the
    window; a report without a person is its own."""
    key = func.coalesce(
        BounceReport.email_digest, literal("report:") + cast(BounceReport.id, String)
    )
    if campaign:
        return key
    return key + literal(":") + func.coalesce(cast(BounceReport.campaign_id, String), literal(""))


def _report_counts(campaign: bool) -> tuple[Any, ...]:
    """count(distinct person) and the same for SMTP refusals only."""
    key = _person(campaign)
    return (
        func.count(func.distinct(key)),
        func.count(func.distinct(case((BounceReport.source == "smtp", key)))),
    )


def _fill(counts: dict[str, int], kind: str, persons: int, smtp: int) -> None:
    if kind == BounceKind.HARD:
        counts["hard_bounces"] += persons
        counts["refused"] += smtp
    elif kind == BounceKind.SOFT:
        counts["soft_bounces"] += persons
    elif kind == BounceKind.COMPLAINT:
        counts["complaints"] += persons


def _blank() -> dict[str, int]:
    return {"refused": 0, "hard_bounces": 0, "soft_bounces": 0, "complaints": 0}


def sent_counts(ids: Sequence[int]) -> dict[int, int]:
    """Deliveries sent per campaign (the (campaign_id, status) index only)."""
    rows = db.session.execute(
        select(Delivery.campaign_id, func.count())
        .where(Delivery.campaign_id.in_(ids), Delivery.status == DeliveryStatus.SENT)
        .group_by(Delivery.campaign_id)
    ).all()
    return {int(cid): int(n) for cid, n in rows}


def report_counts(ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Per campaign: refused, hard_bounces, soft_bounces and complaints."""
    counts = {cid: _blank() for cid in ids}
    rows = db.session.execute(
        select(BounceReport.campaign_id, BounceReport.kind, *_report_counts(True))
        .where(BounceReport.campaign_id.in_(ids))
        .group_by(BounceReport.campaign_id, BounceReport.kind)
    ).all()
    for cid, kind, persons, smtp in rows:
        _fill(counts[cid], kind, int(persons), int(smtp))
    return counts


def campaign_figures(
    campaign_ids: Iterable[int], *, unsubscribes: bool = True
) -> dict[int, Figures]:
    """Figures per campaign, each a grouped query over all the campaigns at once.

    ``unsubscribes=False`` leaves the attribution of withdrawals out (the
    automatic pause needs only sends, bounces and complaints).
    """
    ids = sorted(set(campaign_ids))
    if not ids:
        return {}
    sends = sent_counts(ids)
    counts = report_counts(ids)
    left = _attributed_unsubscribes(ids) if unsubscribes else {}
    return {
        cid: Figures(sends=sends.get(cid, 0), unsubscribes=left.get(cid, 0), **counts[cid])
        for cid in ids
    }


def _attributed_unsubscribes(ids: Sequence[int]) -> dict[int, int]:
    """Per campaign: recipients who withdrew from its list after its mail and
    before a later mail of the list reached them.

    Driven by the withdrawals (far fewer than deliveries): each is joined to
    the person's delivery of each campaign of its list through the unique
    (campaign_id, subscriber_id) index, and kept for the last one sent before it.
    """
    later = aliased(Delivery)
    later_campaign = aliased(Campaign)
    first_start = select(func.min(Campaign.started_at)).where(Campaign.id.in_(ids))
    sent_between = exists(
        select(later.id)
        .join(later_campaign, later_campaign.id == later.campaign_id)
        .where(
            later_campaign.list_id == ConsentEvent.list_id,
            later.subscriber_id == ConsentEvent.subscriber_id,
            later.status == DeliveryStatus.SENT,
            later.sent_at > Delivery.sent_at,
            later.sent_at <= ConsentEvent.occurred_at,
        )
    )
    query = (
        select(Delivery.campaign_id, func.count(func.distinct(ConsentEvent.subscriber_id)))
        .select_from(ConsentEvent)
        .join(Campaign, Campaign.list_id == ConsentEvent.list_id)
        .join(
            Delivery,
            and_(
                Delivery.campaign_id == Campaign.id,
                Delivery.subscriber_id == ConsentEvent.subscriber_id,
            ),
        )
        .where(
            ConsentEvent.event == ConsentEventType.WITHDRAWN,
            ConsentEvent.occurred_at >= first_start.scalar_subquery(),
            Campaign.id.in_(ids),
            Delivery.status == DeliveryStatus.SENT,
            Delivery.sent_at <= ConsentEvent.occurred_at,
            ~sent_between,
        )
        .group_by(Delivery.campaign_id)
    )
    return {int(cid): int(n) for cid, n in db.session.execute(query).all()}


def window_figures(since: datetime) -> Figures:
    """Figures over everything sent and received since ``since``."""
    # A campaign started in the window sent all its mail in it: its sent rows
    # are counted from the (campaign_id, status) index alone. Only campaigns
    # started before the window and sending into it need each row's sent_at.
    started_within = select(Campaign.id).where(Campaign.started_at >= since)
    started_before = select(Campaign.id).where(
        Campaign.started_at < since,
        or_(Campaign.finished_at.is_(None), Campaign.finished_at >= since),
    )
    sent = Delivery.status == DeliveryStatus.SENT
    sends = sum(
        int(db.session.scalar(select(func.count()).select_from(Delivery).where(*where)) or 0)
        for where in (
            (Delivery.campaign_id.in_(started_within), sent),
            (Delivery.campaign_id.in_(started_before), sent, Delivery.sent_at >= since),
        )
    )
    counts = _blank()
    rows = db.session.execute(
        select(BounceReport.kind, *_report_counts(False))
        .where(BounceReport.received_at >= since)
        .group_by(BounceReport.kind)
    ).all()
    for kind, persons, smtp in rows:
        _fill(counts, kind, int(persons), int(smtp))
    withdrawn = db.session.scalar(
        select(func.count())
        .select_from(ConsentEvent)
        .where(ConsentEvent.event == ConsentEventType.WITHDRAWN, ConsentEvent.occurred_at >= since)
    )
    return Figures(sends=sends, unsubscribes=int(withdrawn or 0), **counts)


def _seconds_between(start: Any, end: Any) -> ColumnElement[float]:
    """``end - start`` in seconds, in the session's SQL dialect."""
    if db.session.get_bind().dialect.name == "postgresql":
        return cast(func.extract("epoch", end - start), Float)
    return (func.julianday(end) - func.julianday(start)) * 86400.0


def _names_list(list_id: Any) -> ColumnElement[bool]:
    """The outbox row is a welcome mail for ``list_id`` or a confirmation mail
    naming it among its lists (payload ``list`` / ``lists``)."""
    payload = OutboxMessage.payload
    if db.session.get_bind().dialect.name == "postgresql":
        document = cast(payload, JSONB)
        welcome = document["list"].astext == cast(list_id, String)
        confirm = document["lists"].contains(func.to_jsonb(list_id))
    else:
        welcome = func.json_extract(payload, "$.list") == list_id
        members = func.json_each(payload, "$.lists").table_valued("value")
        confirm = exists(select(literal(1)).select_from(members).where(members.c.value == list_id))
    return or_(
        and_(OutboxMessage.kind == OutboxKind.WELCOME, welcome),
        and_(OutboxMessage.kind == OutboxKind.CONFIRM, confirm),
    )


def unsubscribe_effect(since: datetime) -> UnsubscribeEffect:
    """For every withdrawal since ``since``: the mails sent to the person for
    the list after it, with no new consent for the list in between (see the
    module). One query: the withdrawals, each mail after one of them, the
    mails counted once, the longest gap."""
    withdrawal = aliased(ConsentEvent, name="withdrawal")
    again = aliased(ConsentEvent, name="again")
    withdrawals = (
        select(
            withdrawal.subscriber_id.label("subscriber_id"),
            withdrawal.list_id.label("list_id"),
            withdrawal.occurred_at.label("at"),
        )
        .where(
            withdrawal.event == ConsentEventType.WITHDRAWN,
            withdrawal.occurred_at >= since,
            withdrawal.subscriber_id.is_not(None),
            withdrawal.list_id.is_not(None),
        )
        .subquery("withdrawals")
    )

    def consent_again(sent_at: Any, kinds: tuple[str, ...]) -> ColumnElement[bool]:
        return exists(
            select(again.id).where(
                again.subscriber_id == withdrawals.c.subscriber_id,
                again.list_id == withdrawals.c.list_id,
                again.event.in_(kinds),
                again.occurred_at > withdrawals.c.at,
                again.occurred_at <= sent_at,
            )
        )

    campaign_mails = (
        select(
            literal("d").label("source"),
            cast(Delivery.id, Integer).label("mail_id"),
            _seconds_between(withdrawals.c.at, Delivery.sent_at).label("gap"),
        )
        .select_from(withdrawals)
        .join(Campaign, Campaign.list_id == withdrawals.c.list_id)
        .join(
            Delivery,
            and_(
                Delivery.campaign_id == Campaign.id,
                Delivery.subscriber_id == withdrawals.c.subscriber_id,
            ),
        )
        .where(
            Delivery.status == DeliveryStatus.SENT,
            Delivery.sent_at > withdrawals.c.at,
            ~consent_again(Delivery.sent_at, RECONSENT),
        )
    )
    list_mails = (
        select(
            literal("o").label("source"),
            OutboxMessage.id.label("mail_id"),
            _seconds_between(withdrawals.c.at, OutboxMessage.sent_at).label("gap"),
        )
        .select_from(withdrawals)
        .join(OutboxMessage, OutboxMessage.subscriber_id == withdrawals.c.subscriber_id)
        .where(
            OutboxMessage.status == OutboxStatus.SENT,
            OutboxMessage.sent_at > withdrawals.c.at,
            _names_list(withdrawals.c.list_id),
            ~consent_again(OutboxMessage.sent_at, SIGNED_UP_AGAIN),
        )
    )
    mails = union_all(campaign_mails, list_mails).subquery("mails")
    per_mail = (
        select(mails.c.source, mails.c.mail_id, func.max(mails.c.gap).label("gap"))
        .group_by(mails.c.source, mails.c.mail_id)
        .subquery("per_mail")
    )
    count, longest = db.session.execute(
        select(func.count(), func.max(per_mail.c.gap)).select_from(per_mail)
    ).one()
    total = db.session.scalar(select(func.count()).select_from(withdrawals))
    return UnsubscribeEffect(
        withdrawals=int(total or 0),
        mails_after=int(count or 0),
        longest_gap_seconds=round(float(longest), 3) if longest is not None else None,
    )
