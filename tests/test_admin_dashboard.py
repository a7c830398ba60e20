"""The dashboard: counts per list and status, daily ledger activity as an SVG chart
with a table alternative, the confirmation rate, and campaigns in progress."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import update

from newsletter.campaigns.service import create_campaign, start_campaign
from newsletter.extensions import db
from newsletter.ledger import Evidence, append_event
from newsletter.models import (
    Channel,
    ConsentEvent,
    LedgerCheckpoint,
    MailingList,
    Role,
    Subscriber,
    Subscription,
    SubscriptionStatus,
)
from newsletter.reports.chart import Series, line_chart, nice_ceiling
from newsletter.reports.dashboard import daily_activity, subscriber_counts
from newsletter.subscriptions.lists import current_consent_text

from .fixtures.ledger import seal_and_verify
from .fixtures.staff import StaffClient

TODAY = date(2026, 11, 24)


def at(days_ago: int, hour: int = 12) -> datetime:
    """A UTC time ``days_ago`` days before TODAY."""
    return datetime.combine(TODAY - timedelta(days=days_ago), datetime.min.time(), UTC).replace(
        hour=hour
    )


def add(email: str, mailing_list: MailingList, status: SubscriptionStatus) -> Subscriber:
    """A subscriber on a list with a status (no ledger events)."""
    subscriber = Subscriber(email=email, email_key=email)
    subscriber.subscriptions.append(
        Subscription(
            list_id=mailing_list.id,
            status=status,
            consent_text_id=current_consent_text(mailing_list.id).id,
        )
    )
    db.session.add(subscriber)
    db.session.commit()
    return subscriber


@pytest.fixture
def history(
    monkeypatch: pytest.MonkeyPatch, default_list: MailingList
) -> Callable[[list[tuple[int, str]]], None]:
    """Write ledger events at chosen days (in time order, as the ledger does)."""
    subscriber = add("history@example.org", default_list, SubscriptionStatus.ACTIVE)

    def write(events: list[tuple[int, str]]) -> None:
        for n, (days_ago, event) in enumerate(events):
            when = at(days_ago) + timedelta(seconds=n)
            monkeypatch.setattr("newsletter.ledger.append.utcnow", lambda when=when: when)
            append_event(
                event=event,
                channel=Channel.API,
                subscriber=subscriber,
                evidence=Evidence(),
                list_id=default_list.id,
            )
            db.session.commit()
        monkeypatch.undo()

    return write


KNOWN = [
    (120, "requested"),  # before the window: not counted
    (90, "requested"),  # the day before the first day: not counted
    (89, "requested"),  # the first day of the window
    (10, "requested"),
    (10, "requested"),
    (10, "requested"),
    (9, "confirmed"),
    (9, "confirmed"),
    (5, "preferences_changed"),  # not a series
    (0, "withdrawn"),
]


def test_daily_activity_counts_per_utc_day_within_90_days(history) -> None:
    history(KNOWN)
    activity = daily_activity(TODAY)
    assert activity.days[0] == TODAY - timedelta(days=89)
    assert activity.days[-1] == TODAY
    assert len(activity.days) == 90
    requested = activity.series["requested"]
    assert requested[0] == 1
    assert requested[79] == 3
    assert sum(requested) == 4
    assert activity.series["confirmed"][80] == 2
    assert sum(activity.series["confirmed"]) == 2
    assert activity.series["withdrawn"][89] == 1
    assert sum(activity.series["withdrawn"]) == 1
    assert activity.confirmation_rate == 0.5
    assert seal_and_verify().ok


def test_daily_activity_without_events_in_the_window(history) -> None:
    history([(200, "requested"), (150, "confirmed")])
    activity = daily_activity(TODAY)
    assert all(sum(values) == 0 for values in activity.series.values())
    assert activity.confirmation_rate is None
    assert sum(daily_activity(TODAY - timedelta(days=100)).series["confirmed"]) == 1


def test_chart_draws_known_values() -> None:
    days = [date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)]
    svg = line_chart(
        days,
        [Series("requested", "Signups", [0, 2, 4]), Series("withdrawn", "Unsubscribes", [1, 0, 0])],
        title="Signups <per day>",
        desc="From 1 to 3 November.",
        chart_id="t",
    )
    assert svg.startswith('<svg xmlns="http://www.w3.org/2000/svg" class="chart"')
    assert 'role="img" aria-labelledby="t-title t-desc"' in svg
    assert '<title id="t-title">Signups &lt;per day&gt;</title>' in svg
    assert '<desc id="t-desc">From 1 to 3 November.</desc>' in svg
    # x: 48 + 660 * i / 2; y: 12 + 212 * (1 - v / 4) on a 0..4 scale.
    assert 'class="series series-requested" points="48,224 378,118 708,12"' in svg
    assert 'class="series series-withdrawn" points="48,171 378,224 708,224"' in svg
    assert list(re.findall(r">(\d\d\.\d\d)<", svg)) == ["01.11", "03.11"]
    assert "style" not in svg
    assert "<script" not in svg


@pytest.mark.parametrize(
    ("value", "top"), [(0, 4), (3, 4), (5, 8), (9, 20), (99, 100), (101, 200), (1234, 2000)]
)
def test_chart_scale_is_round(value: int, top: int) -> None:
    assert nice_ceiling(value) == top


def test_subscriber_counts_per_list_and_status(make_list: Callable[..., MailingList]) -> None:
    news = make_list("news", "News")
    empty = make_list("empty", "Empty")
    for n in range(3):
        add(f"a{n}@example.org", news, SubscriptionStatus.ACTIVE)
    add("p@example.org", news, SubscriptionStatus.PENDING)
    counts = {row.slug: row for row in subscriber_counts()}
    assert counts["news"].counts == {"pending": 1, "active": 3, "unsubscribed": 0, "bounced": 0}
    assert counts["news"].total == 4
    assert counts["empty"].total == 0
    assert empty.id


@pytest.mark.parametrize("role", [Role.VIEWER, Role.EDITOR, Role.OWNER])
def test_dashboard_opens_for_every_role(
    staff_client: Callable[..., StaffClient], role: Role
) -> None:
    assert staff_client(role).get("/admin/").status_code == 200


def test_dashboard_needs_a_login(app: Flask) -> None:
    response = app.test_client().get("/admin/")
    assert response.status_code == 302
    assert response.location.startswith("/admin/login")


def test_dashboard_page_shows_counts_chart_table_rate_and_campaign(
    monkeypatch: pytest.MonkeyPatch,
    history,
    default_list: MailingList,
    staff_client: Callable[..., StaffClient],
) -> None:
    now = at(0, hour=18)
    history([(1, "requested"), (1, "requested"), (1, "requested"), (0, "confirmed")])
    for n in range(2):
        add(f"reader{n}@example.org", default_list, SubscriptionStatus.ACTIVE)
    campaign = create_campaign("nyhedsbrev", "Novembernummer", "Hej!\n")
    start_campaign(campaign.id)
    monkeypatch.setattr("newsletter.reports.dashboard.utcnow", lambda: now)

    response = staff_client(Role.VIEWER).get("/admin/")
    page = response.get_data(as_text=True)

    assert response.status_code == 200
    # Counts per list and status, each a link to the filtered subscriber list.
    assert 'href="/admin/subscribers?list=nyhedsbrev&amp;status=active">3<' in page
    # The chart, labelled, with one line per series, and its table alternative.
    assert 'role="img" aria-labelledby="activity-title activity-desc"' in page
    assert "3 signups, 1 confirmations, 0 unsubscribes" in page
    for key in ("requested", "confirmed", "withdrawn"):
        assert f'class="series series-{key}"' in page
    yesterday = (TODAY - timedelta(days=1)).isoformat()
    assert (
        f'<tr><th scope="row">{yesterday}</th><td class="num">3</td>'
        '<td class="num">0</td><td class="num">0</td></tr>'
    ) in page
    assert "33.3 %" in page  # confirmation rate
    # The campaign in progress, with a native progress bar.
    assert "Novembernummer" in page
    assert 'max="3" value="0"' in page
    assert "0 of 3 handled" in page
    assert "style=" not in page
    assert "<script" not in page


# --- the consent ledger: the latest checkpoint, and a warning when sealing lags ---------


def ledger_section(page: str) -> str:
    """The dashboard's ledger section."""
    start = page.index('<section aria-labelledby="ledger-heading">')
    return page[start : page.index("</section>", start)]


def test_dashboard_shows_the_latest_checkpoint_and_warns_when_sealing_lags(
    monkeypatch: pytest.MonkeyPatch,
    history,
    staff_client: Callable[..., StaffClient],
) -> None:
    client = staff_client(Role.VIEWER)
    section = ledger_section(client.get("/admin/").get_data(as_text=True))
    assert "No checkpoint has been signed yet (0 events waiting)." in section
    assert "Sealing lags" not in section

    history([(0, "requested"), (0, "confirmed")])  # two events, occurred today at noon
    now = at(0, hour=12) + timedelta(minutes=30)
    monkeypatch.setattr("newsletter.ledger.lag.utcnow", lambda: now)
    section = ledger_section(client.get("/admin/").get_data(as_text=True))
    assert "No checkpoint has been signed yet (2 events waiting)." in section
    assert "Sealing lags: an event has waited more than 30 seconds" in section

    seal_and_verify()
    signed = now - timedelta(minutes=5)
    db.session.execute(update(LedgerCheckpoint).values(signed_at=signed))
    db.session.commit()
    section = ledger_section(client.get("/admin/").get_data(as_text=True))
    assert "<dt>Events under the latest checkpoint</dt><dd>2</dd>" in section
    assert f"<dd>{signed.strftime('%Y-%m-%d %H:%M:%S')} UTC</dd>" in section
    assert "<dt>Age</dt><dd>5 minutes</dd>" in section
    assert "<dt>Waiting to be sealed</dt><dd>0</dd>" in section
    assert "Sealing lags" not in section

    # A fresh event after a quiet spell is no lag; one waiting longer than
    # three intervals since the checkpoint is.
    history([(0, "withdrawn")])  # (it undoes every monkeypatch)
    monkeypatch.setattr("newsletter.ledger.lag.utcnow", lambda: now)
    db.session.execute(update(ConsentEvent).where(ConsentEvent.seq == 3).values(occurred_at=now))
    db.session.commit()
    section = ledger_section(client.get("/admin/").get_data(as_text=True))
    assert "<dt>Waiting to be sealed</dt><dd>1</dd>" in section
    assert "Sealing lags" not in section
    db.session.execute(
        update(ConsentEvent)
        .where(ConsentEvent.seq == 3)
        .values(occurred_at=now - timedelta(seconds=31))
    )
    db.session.commit()
    section = ledger_section(client.get("/admin/").get_data(as_text=True))
    assert "Sealing lags: an event has waited more than 30 seconds" in section
