"""The deliverability figures (deliverability/compliance.py): rates per campaign
and over 30 days against the Gmail/Yahoo lines, unsubscribes attributed to the
mail before them, mail that still went out after an unsubscribe, and where
they are shown: `newsletter report deliverability`, the console page and the
dashboard."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from email.message import EmailMessage

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import event, select, update

from newsletter.campaigns.service import start_campaign
from newsletter.deliverability.compliance import (
    Figures,
    campaign_figures,
    complaint_level,
    deliverability_report,
    unsubscribe_effect,
    window_figures,
)
from newsletter.extensions import db
from newsletter.ledger import Evidence
from newsletter.models import (
    BounceKind,
    Campaign,
    CampaignStatus,
    Channel,
    ConsentEvent,
    ConsentEventType,
    Delivery,
    DeliveryStatus,
    MailingList,
    OutboxKind,
    OutboxMessage,
    OutboxStatus,
    Role,
    Subscriber,
    utcnow,
)
from newsletter.subscriptions.lists import create_list
from newsletter.subscriptions.withdrawal import withdraw
from newsletter.transaction import unit_of_work

from .fixtures.deliverability_data import add_reports, add_sent, sending_campaign
from .fixtures.staff import StaffClient

Subscribed = Callable[..., EmailMessage]


def person(address: str) -> Subscriber:
    found = db.session.scalar(select(Subscriber).where(Subscriber.email_key == address))
    assert found is not None
    return found


def leave(address: str, mailing_list: MailingList | None = None) -> datetime:
    """Withdraw ``address`` from one list (or all) as the unsubscribe page does;
    returns the time the ledger gave the withdrawal."""
    subscriber = person(address)
    with unit_of_work():
        withdraw(
            subscriber,
            [
                s
                for s in subscriber.subscriptions
                if mailing_list is None or s.list_id == mailing_list.id
            ],
            channel=Channel.UNSUBSCRIBE_PAGE,
            evidence=Evidence(),
        )
    return latest(ConsentEventType.WITHDRAWN, subscriber.id)


def latest(kind: ConsentEventType, subscriber_id: int) -> datetime:
    at = db.session.scalar(
        select(ConsentEvent.occurred_at)
        .where(ConsentEvent.event == kind, ConsentEvent.subscriber_id == subscriber_id)
        .order_by(ConsentEvent.occurred_at.desc())
        .limit(1)
    )
    assert at is not None
    return at


def mark_sent(campaign_id: int, address: str, at: datetime) -> None:
    """The person's delivery of the campaign went out at ``at``."""
    db.session.execute(
        update(Delivery)
        .where(Delivery.campaign_id == campaign_id, Delivery.subscriber_id == person(address).id)
        .values(status=DeliveryStatus.SENT, sent_at=at)
    )
    db.session.commit()


def started(mailing_list: MailingList) -> int:
    """A campaign of the list started now: a queued delivery per active subscriber."""
    campaign_id = sending_campaign(mailing_list, status=CampaignStatus.DRAFT)
    start_campaign(campaign_id)
    return campaign_id


# --- figures per campaign and over the window --------------------------------


def test_campaign_figures_count_each_person_once_and_smtp_refusals_as_attempts(
    default_list: MailingList,
) -> None:
    campaign = sending_campaign(default_list)
    other = sending_campaign(default_list)
    add_sent(campaign, 1000)
    add_sent(other, 10)
    hard = add_reports(campaign, BounceKind.HARD, 20)
    add_reports(campaign, BounceKind.HARD, 1, source="postmark", digests=hard[:1])  # same person
    add_reports(campaign, BounceKind.HARD, 5, source="smtp")  # refused: failed, not sent
    add_reports(campaign, BounceKind.SOFT, 30)
    add_reports(campaign, BounceKind.COMPLAINT, 2)
    add_reports(campaign, BounceKind.AUTO_REPLY, 7)
    add_reports(other, BounceKind.COMPLAINT, 3)

    figures = campaign_figures([campaign, other])
    mine = figures[campaign]
    assert (mine.sends, mine.refused, mine.attempted) == (1000, 5, 1005)
    assert (mine.hard_bounces, mine.soft_bounces, mine.complaints) == (25, 30, 2)
    assert mine.hard_bounce_rate == pytest.approx(25 / 1005)
    assert mine.soft_bounce_rate == pytest.approx(30 / 1005)
    assert mine.complaint_rate == pytest.approx(0.002)
    assert mine.complaint_level == "over_target"
    assert figures[other].complaints == 3
    assert figures[other].complaint_rate == pytest.approx(0.3)
    assert figures[other].complaint_level == "over_limit"
    as_json = mine.as_dict()
    assert as_json["complaint_rate"] == pytest.approx(0.002)
    assert as_json["attempted"] == 1005


def test_nothing_sent_has_no_rates() -> None:
    empty = Figures()
    assert (empty.hard_bounce_rate, empty.complaint_rate, empty.unsubscribe_rate) == (None,) * 3
    assert empty.complaint_level == "none"


@pytest.mark.parametrize(
    ("rate", "level"),
    [
        (0.0, "ok"),
        (0.001, "ok"),  # at the 0.1 % target: still under it
        (0.00101, "over_target"),
        (0.003, "over_target"),  # reaching 0.3 % is not passing it
        (0.00301, "over_limit"),
    ],
)
def test_complaint_levels_against_the_lines(rate: float, level: str) -> None:
    assert complaint_level(rate) == level


def test_the_window_counts_only_the_last_30_days(default_list: MailingList) -> None:
    now = utcnow()
    old = sending_campaign(default_list, started_at=now - timedelta(days=60))
    db.session.execute(
        update(Campaign).where(Campaign.id == old).values(finished_at=now - timedelta(days=40))
    )
    db.session.commit()
    add_sent(old, 500, at=now - timedelta(days=45))
    recent = sending_campaign(default_list, started_at=now - timedelta(days=35))
    add_sent(recent, 300, at=now - timedelta(days=31))  # before the window
    add_sent(recent, 2000, at=now - timedelta(days=2))
    add_reports(old, BounceKind.COMPLAINT, 9, at=now - timedelta(days=44))
    add_reports(recent, BounceKind.COMPLAINT, 3, at=now - timedelta(days=1))
    add_reports(None, BounceKind.COMPLAINT, 1)  # a complaint no campaign could be found for
    add_reports(recent, BounceKind.HARD, 40)

    window = window_figures(now - timedelta(days=30))
    assert window.sends == 2000
    assert window.complaints == 4
    assert window.complaint_rate == pytest.approx(0.002)
    assert window.hard_bounces == 40
    assert window.hard_bounce_rate == pytest.approx(0.02)


# --- unsubscribes: attribution and effect -------------------------------------


def test_a_withdrawal_is_attributed_to_the_last_mail_before_it(
    default_list: MailingList, subscribed: Subscribed
) -> None:
    for name in ("ada", "bo", "cy"):
        subscribed(f"{name}@example.org")
    first = started(default_list)
    second = started(default_list)
    now = utcnow()
    for address in ("ada@example.org", "bo@example.org", "cy@example.org"):
        mark_sent(first, address, now - timedelta(days=3))
    mark_sent(second, "bo@example.org", now - timedelta(days=1))
    leave("ada@example.org")  # got only the first campaign's mail: the first's
    leave("bo@example.org")  # the second reached Bo before he left: the second's
    figures = campaign_figures([first, second])
    assert figures[first].unsubscribes == 1
    assert figures[second].unsubscribes == 1
    assert figures[first].unsubscribe_rate == pytest.approx(1 / 3)
    assert figures[second].unsubscribe_rate == pytest.approx(1.0)
    window = window_figures(now - timedelta(days=30))
    assert window.unsubscribes == 2  # withdrawn events in the window
    assert window.sends == 4


def test_mail_after_an_unsubscribe_is_counted_with_the_longest_gap(
    app: Flask, default_list: MailingList, subscribed: Subscribed
) -> None:
    other_list = create_list("andet", "Andet", "Ja tak")
    for name in ("ada", "bo", "cy", "dan"):
        subscribed(f"{name}@example.org")
    campaign = started(default_list)
    since = utcnow() - timedelta(days=30)
    assert unsubscribe_effect(since).as_dict() == {
        "withdrawals": 0,
        "mails_after": 0,
        "longest_gap_seconds": None,
        "ok": True,
    }

    ada_left = leave("ada@example.org")
    mark_sent(campaign, "ada@example.org", ada_left - timedelta(seconds=1))  # before: fine
    bo_left = leave("bo@example.org")
    mark_sent(campaign, "bo@example.org", bo_left + timedelta(seconds=42))  # after: counted
    cy_left = leave("cy@example.org")
    cy = person("cy@example.org")

    def outbox(kind: OutboxKind, payload: dict[str, object], after: float) -> None:
        db.session.add(
            OutboxMessage(
                kind=kind,
                subscriber_id=cy.id,
                payload=payload,
                status=OutboxStatus.SENT,
                sent_at=cy_left + timedelta(seconds=after),
            )
        )
        db.session.commit()

    outbox(OutboxKind.WELCOME, {"list": other_list.id}, 5)  # another list: fine
    outbox(OutboxKind.CONFIRM, {"lists": [other_list.id]}, 6)  # another list: fine
    outbox(OutboxKind.DATA_EXPORT, {}, 7)  # not mail of a list
    effect = unsubscribe_effect(since)
    assert (effect.withdrawals, effect.mails_after) == (3, 1)
    assert effect.longest_gap_seconds == pytest.approx(42, abs=0.01)

    outbox(OutboxKind.CONFIRM, {"lists": [other_list.id, default_list.id]}, 90)
    outbox(OutboxKind.WELCOME, {"list": default_list.id}, 60)
    effect = unsubscribe_effect(since)
    assert effect.mails_after == 3
    assert effect.longest_gap_seconds == pytest.approx(90, abs=0.01)
    assert not effect.ok

    # Dan leaves and signs up again: mail after the new consent is his again.
    dan_left = leave("dan@example.org")
    subscribed("dan@example.org")
    dan_back = latest(ConsentEventType.CONFIRMED, person("dan@example.org").id)
    assert dan_back > dan_left
    mark_sent(campaign, "dan@example.org", dan_back + timedelta(seconds=1))
    assert unsubscribe_effect(since).mails_after == 3
    # Campaign mail between the new signup and its confirmation: not his yet.
    mark_sent(campaign, "dan@example.org", dan_back - timedelta(microseconds=1))
    assert unsubscribe_effect(since).mails_after == 4


def test_the_unsubscribe_effect_is_two_queries_however_many_people(
    app: Flask, default_list: MailingList, subscribed: Subscribed
) -> None:
    for name in ("ada", "bo", "cy"):
        subscribed(f"{name}@example.org")
        leave(f"{name}@example.org")

    @contextmanager
    def counted() -> Iterator[list[str]]:
        statements: list[str] = []

        def record(*args: object) -> None:
            statements.append(str(args[2]))

        engine = db.engine
        event.listen(engine, "before_cursor_execute", record)
        try:
            yield statements
        finally:
            event.remove(engine, "before_cursor_execute", record)

    with counted() as statements:
        assert unsubscribe_effect(utcnow() - timedelta(days=30)).withdrawals == 3
    assert len(statements) == 2


# --- where the figures are shown ----------------------------------------------


def over_the_limit(mailing_list: MailingList) -> int:
    campaign = sending_campaign(mailing_list, subject="Loud news")
    add_sent(campaign, 1000)
    add_reports(campaign, BounceKind.COMPLAINT, 5)
    add_reports(campaign, BounceKind.HARD, 12)
    return campaign


def test_report_command_json_and_text(runner: FlaskCliRunner, default_list: MailingList) -> None:
    quiet = runner.invoke(args=["report", "deliverability", "--json"])
    assert quiet.exit_code == 0, quiet.output
    assert json.loads(quiet.output)["window"]["sends"] == 0

    campaign = over_the_limit(default_list)
    result = runner.invoke(args=["report", "deliverability", "--json"])
    assert result.exit_code == 1  # over 0.3 %: a cron job notices
    data = json.loads(result.output)
    assert data["window_days"] == 30
    assert data["lines"] == {"target": 0.001, "limit": 0.003}
    assert data["window"]["complaint_rate"] == pytest.approx(0.005)
    assert data["window"]["complaint_level"] == "over_limit"
    assert data["unsubscribe_effect"]["mails_after"] == 0
    (row,) = data["campaigns"]
    assert row["id"] == campaign
    assert row["subject"] == "Loud news"
    assert row["hard_bounce_rate"] == pytest.approx(0.012)

    text = runner.invoke(args=["report", "deliverability"])
    assert text.exit_code == 1
    assert "complaints 5 (0.50 %, OVER the 0.3 % limit)" in text.output
    assert "mails sent after one of them: 0" in text.output
    assert "'Loud news' (sending)" in text.output


def test_console_page_and_dashboard_warn_over_the_lines(
    default_list: MailingList, staff_client: Callable[..., StaffClient]
) -> None:
    viewer = staff_client(Role.VIEWER)
    page = viewer.get("/admin/deliverability")
    assert page.status_code == 200
    assert "No campaign sent mail in the period." in page.get_data(as_text=True)
    dashboard = viewer.get("/admin/").get_data(as_text=True)
    assert 'data-field="complaint-rate">\N{EN DASH}<' in dashboard
    assert "The complaint rate" not in dashboard
    assert 'href="/admin/deliverability"' in dashboard  # the menu and the section link

    campaign = sending_campaign(default_list, subject="Mild news")
    add_sent(campaign, 1000)
    add_reports(campaign, BounceKind.COMPLAINT, 2)
    dashboard = viewer.get("/admin/").get_data(as_text=True)
    assert 'data-field="complaint-rate">0.200 %<' in dashboard
    assert "The complaint rate is over 0.1 %" in dashboard

    over_the_limit(default_list)
    dashboard = viewer.get("/admin/").get_data(as_text=True)
    assert "The complaint rate passes 0.3 %" in dashboard
    html = viewer.get("/admin/deliverability").get_data(as_text=True)
    assert "Loud news" in html
    assert "Mild news" in html
    assert "0.350 %" in html  # 7 complaints of 2000 mails over the window
    assert "0.500 % (5)" in html  # the loud campaign's own
    assert "1.20 % (12)" in html
    assert "No mail went to anyone for a list after they left it" in html


def test_report_lists_the_windows_campaigns_newest_first(default_list: MailingList) -> None:
    now = utcnow()
    old = sending_campaign(default_list, started_at=now - timedelta(days=90))
    db.session.execute(
        update(Campaign)
        .where(Campaign.id == old)
        .values(finished_at=now - timedelta(days=80), status="done")
    )
    db.session.commit()
    first = sending_campaign(default_list, started_at=now - timedelta(days=5))
    second = sending_campaign(default_list, started_at=now - timedelta(days=1))
    report = deliverability_report()
    assert [c.id for c in report.campaigns] == [second, first]
