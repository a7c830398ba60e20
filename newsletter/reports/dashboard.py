"""The dashboard's figures: subscribers per list and status, daily ledger activity,
the confirmation rate and the campaigns in progress.

Built for a million subscribers on PostgreSQL: every count is a GROUP BY in
SQL. Counts per list and status read the (list_id, status, subscriber_id)
index only. Daily activity reads only the last 90 days of the ledger, through
the index on ``occurred_at`` (migration 0010). ``seq`` order is not time
order: a signup's events carry the request's time but are appended when a
worker takes the row from the intake, so an event appended later can have
happened earlier. Bisecting ``seq`` for the window's first event (as before)
would miss such events, and bounding the bisection by the longest intake wait
is not correct either: a row waits as long as no worker runs. The window is
therefore a range on ``occurred_at`` itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import func, select

from ..campaigns.service import CampaignProgress, campaign_progress
from ..extensions import db
from ..models import (
    Campaign,
    CampaignStatus,
    ConsentEvent,
    ConsentEventType,
    MailingList,
    Subscription,
    SubscriptionStatus,
    utcnow,
)

WINDOW_DAYS = 90
# The chart's series, in drawing order: ledger event -> what the console calls it.
ACTIVITY_EVENTS = (
    ConsentEventType.REQUESTED,
    ConsentEventType.CONFIRMED,
    ConsentEventType.WITHDRAWN,
)
IN_PROGRESS = (CampaignStatus.SENDING, CampaignStatus.PAUSED)
MAX_CAMPAIGNS_SHOWN = 5


@dataclass(frozen=True)
class ListCounts:
    """One list's subscriptions by status."""

    slug: str
    name: str
    archived: bool
    counts: dict[SubscriptionStatus, int]

    @property
    def total(self) -> int:
        """Subscriptions on the list, whatever their status."""
        return sum(self.counts.values())


@dataclass(frozen=True)
class Activity:
    """Events per UTC day over the window, oldest day first."""

    days: list[date]
    series: dict[str, list[int]]

    def total(self, event: str) -> int:
        """The event's count over the whole window."""
        return sum(self.series.get(event, []))

    @property
    def confirmation_rate(self) -> float | None:
        """Confirmations per signup in the window (None without signups)."""
        requested = self.total(ConsentEventType.REQUESTED)
        if not requested:
            return None
        return self.total(ConsentEventType.CONFIRMED) / requested

    def rows(self) -> list[tuple[date, list[int]]]:
        """(day, [count per series]) for the table alternative of the chart."""
        keys = list(self.series)
        return [(day, [self.series[k][i] for k in keys]) for i, day in enumerate(self.days)]


@dataclass(frozen=True)
class Dashboard:
    """Everything the dashboard page shows."""

    lists: list[ListCounts]
    activity: Activity
    campaigns: list[tuple[Campaign, CampaignProgress]] = field(default_factory=list)


def dashboard(today: date | None = None) -> Dashboard:
    """Collect the dashboard's figures (read only)."""
    return Dashboard(
        lists=subscriber_counts(),
        activity=daily_activity(today),
        campaigns=campaigns_in_progress(),
    )


def subscriber_counts() -> list[ListCounts]:
    """Subscriptions per list and status, every list (archived ones last)."""
    counts: dict[int, dict[SubscriptionStatus, int]] = {}
    query = select(Subscription.list_id, Subscription.status, func.count()).group_by(
        Subscription.list_id, Subscription.status
    )
    for list_id, status, count in db.session.execute(query):
        counts.setdefault(list_id, {})[SubscriptionStatus(status)] = count
    lists = db.session.scalars(
        select(MailingList).order_by(MailingList.archived_at.is_not(None), MailingList.name)
    )
    return [
        ListCounts(
            slug=m.slug,
            name=m.name,
            archived=m.archived_at is not None,
            counts={s: counts.get(m.id, {}).get(s, 0) for s in SubscriptionStatus},
        )
        for m in lists
    ]


def daily_activity(today: date | None = None, days: int = WINDOW_DAYS) -> Activity:
    """Signups, confirmations and withdrawals per UTC day, the last ``days`` days.

    Events count on the day they happened (``occurred_at``), whenever they were
    appended; the window is an index range on ``occurred_at``, never on ``seq``.
    """
    today = today or utcnow().date()
    first_day = today - timedelta(days=days - 1)
    window = [first_day + timedelta(days=i) for i in range(days)]
    series = {str(event): [0] * days for event in ACTIVITY_EVENTS}
    cutoff = datetime.combine(first_day, time(), UTC)
    end = datetime.combine(today + timedelta(days=1), time(), UTC)
    day = func.date(ConsentEvent.occurred_at)
    query = (
        select(day, ConsentEvent.event, func.count())
        .where(
            ConsentEvent.occurred_at >= cutoff,
            ConsentEvent.occurred_at < end,
            ConsentEvent.event.in_([str(e) for e in ACTIVITY_EVENTS]),
        )
        .group_by(day, ConsentEvent.event)
    )
    for raw_day, event, count in db.session.execute(query):
        # PostgreSQL's date() gives a date, SQLite's a 'YYYY-MM-DD' string.
        when = raw_day if isinstance(raw_day, date) else date.fromisoformat(str(raw_day))
        index = (when - first_day).days
        if 0 <= index < days:
            series[event][index] += count
    return Activity(days=window, series=series)


def campaigns_in_progress() -> list[tuple[Campaign, CampaignProgress]]:
    """Campaigns sending or paused, newest first, each with its progress."""
    campaigns = db.session.scalars(
        select(Campaign)
        .where(Campaign.status.in_(IN_PROGRESS))
        .order_by(Campaign.id.desc())
        .limit(MAX_CAMPAIGNS_SHOWN)
    ).all()
    return [(campaign, campaign_progress(campaign.id)) for campaign in campaigns]
