"""Retention rules with a controlled clock: ``purge(now)`` is called with a time in the future.

Defaults: unconfirmed signups erased after 30 days, people with no list left
after 90 days from their last change, delivery and outbox logs trimmed after
180 days. The worker runs the rules once a day, whatever the number of workers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from email.message import EmailMessage

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from newsletter.campaigns.service import create_campaign, start_campaign
from newsletter.extensions import db
from newsletter.ledger.keys import email_digest
from newsletter.models import (
    ConsentEvent,
    ConsoleSetting,
    Delivery,
    MailingList,
    OutboxMessage,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Suppression,
    utcnow,
)
from newsletter.privacy.retention import LAST_RUN_KEY, PurgeReport, purge, run_due_retention

from .fixtures.ledger import seal_and_verify
from .fixtures.mailflow import link_path

Mails = Callable[[], list[EmailMessage]]


def later(days: float) -> datetime:
    """The controlled clock: ``days`` from now."""
    return utcnow() + timedelta(days=days)


def emails() -> list[str]:
    """Addresses of the subscribers that exist now."""
    db.session.commit()
    found = sorted(db.session.scalars(select(Subscriber.email_key)))
    db.session.commit()
    return found


def nothing_done() -> PurgeReport:
    """The report of a run that changed nothing."""
    return PurgeReport()


def events_of(address: str) -> list[ConsentEvent]:
    """Ledger events of an address (by its keyed digest)."""
    db.session.commit()
    return list(
        db.session.scalars(
            select(ConsentEvent)
            .where(ConsentEvent.email_digest == email_digest(address))
            .order_by(ConsentEvent.seq)
        )
    )


def test_unconfirmed_signups_are_erased_after_30_days(
    app: Flask,
    default_list: MailingList,
    post_form: Callable[..., TestResponse],
    subscribed: Callable[..., EmailMessage],
) -> None:
    subscribed("active@example.org")
    assert post_form("/subscribe", {"email": "pending@example.org"}).status_code == 200

    assert purge(later(29)) == nothing_done()
    assert emails() == ["active@example.org", "pending@example.org"]

    report = purge(later(31))
    assert report.unconfirmed_erased == 1
    assert report.unsubscribed_erased == 0
    assert emails() == ["active@example.org"]
    pending_events = events_of("pending@example.org")
    assert [e.event for e in pending_events] == ["requested", "erased"]
    assert all(e.email is None and e.ip is None for e in pending_events)
    assert seal_and_verify().ok

    # An active subscriber is never touched, however long they stay.
    assert purge(later(3650)).unconfirmed_erased == 0
    assert purge(later(3650)).unsubscribed_erased == 0
    assert emails() == ["active@example.org"]


def test_unsubscribed_people_are_erased_90_days_after_their_last_change(
    app: Flask,
    client: FlaskClient,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
) -> None:
    welcome = subscribed("leaver@example.org")
    assert client.post(link_path(welcome, "unsubscribe")).status_code == 200

    assert purge(later(31)) == nothing_done()  # not an unconfirmed signup
    assert purge(later(89)) == nothing_done()
    assert emails() == ["leaver@example.org"]

    report = purge(later(91))
    assert report.unsubscribed_erased == 1
    assert emails() == []
    db.session.commit()
    suppressed = db.session.scalar(
        select(Suppression.reason).where(
            Suppression.email_digest == email_digest("leaver@example.org")
        )
    )
    assert suppressed == "erased"
    assert [e.event for e in events_of("leaver@example.org")] == [
        "requested",
        "confirmed",
        "withdrawn",
        "erased",
    ]
    assert seal_and_verify().ok


def test_a_lapsed_request_for_another_list_is_dropped_but_the_subscriber_stays(
    app: Flask,
    client: FlaskClient,
    default_list: MailingList,
    make_list: Callable[..., MailingList],
    subscribed: Callable[..., EmailMessage],
) -> None:
    events = make_list("events", "Events")
    welcome = subscribed("both@example.org")
    manage = link_path(welcome, "manage")
    response = client.post(manage, data={"lists": [default_list.id, events.id], "locale": "da"})
    assert response.status_code == 200
    db.session.commit()

    assert purge(later(29)).pending_dropped == 0
    report = purge(later(31))
    assert report.pending_dropped == 1
    assert report.unconfirmed_erased == 0
    db.session.commit()
    rows = db.session.execute(select(Subscription.list_id, Subscription.status)).all()
    assert [tuple(r) for r in rows] == [(default_list.id, SubscriptionStatus.ACTIVE)]
    assert emails() == ["both@example.org"]


def test_delivery_and_outbox_logs_are_trimmed_after_180_days(
    app: Flask,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
    deliver: Mails,
) -> None:
    subscribed("reader@example.org")
    campaign = create_campaign("nyhedsbrev", "News", "Text.")
    assert start_campaign(campaign.id) == 1
    assert len(deliver()) == 1

    assert purge(later(179)) == nothing_done()
    report = purge(later(181))
    assert report.deliveries_anonymised == 1
    assert report.outbox_deleted == 2  # the confirmation and the welcome mail
    db.session.commit()
    delivery = db.session.scalars(select(Delivery)).one()
    # The campaign's numbers stay; who received it does not.
    assert (delivery.status, delivery.subscriber_id, delivery.last_error) == ("sent", None, None)
    assert db.session.scalar(select(func.count()).select_from(OutboxMessage)) == 0
    assert emails() == ["reader@example.org"]


def test_a_period_of_zero_turns_a_rule_off(
    app: Flask,
    default_list: MailingList,
    post_form: Callable[..., TestResponse],
) -> None:
    app.config.update(
        RETENTION_UNCONFIRMED_DAYS=0, RETENTION_UNSUBSCRIBED_DAYS=0, RETENTION_DELIVERY_DAYS=0
    )
    assert post_form("/subscribe", {"email": "kept@example.org"}).status_code == 200
    assert purge(later(10_000)) == nothing_done()
    assert emails() == ["kept@example.org"]


def test_purge_command_prints_what_it_did(
    app: Flask,
    runner: FlaskCliRunner,
    default_list: MailingList,
    post_form: Callable[..., TestResponse],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert post_form("/subscribe", {"email": "old@example.org"}).status_code == 200
    db.session.commit()
    monkeypatch.setattr("newsletter.privacy.commands.utcnow", lambda: later(31))
    result = runner.invoke(args=["purge"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "unconfirmed signups erased: 1",
        "unsubscribed people erased: 0",
        "lapsed list requests dropped: 0",
        "failed signups deleted from the intake: 0",
        "delivery rows anonymised: 0",
        "transactional mail rows deleted: 0",
    ]
    assert emails() == []


def test_the_daily_run_happens_once_a_day_across_workers(
    app: Flask,
    app_factory: Callable[..., Flask],
    default_list: MailingList,
    post_form: Callable[..., TestResponse],
) -> None:
    assert post_form("/subscribe", {"email": "daily@example.org"}).status_code == 200
    db.session.commit()
    day_one = later(31)
    report = run_due_retention(app, day_one)
    assert report is not None
    assert report.unconfirmed_erased == 1
    # The same day again, in this process or in another worker's: nothing.
    assert run_due_retention(app, day_one + timedelta(minutes=5)) is None
    other_worker = app_factory()
    with other_worker.app_context():
        assert run_due_retention(other_worker, day_one + timedelta(minutes=10)) is None
        db.session.remove()
    # The next day it runs again.
    assert run_due_retention(app, day_one + timedelta(days=1)) == nothing_done()
    db.session.commit()
    row = db.session.get(ConsoleSetting, LAST_RUN_KEY)
    assert row is not None
    assert row.value["date"] == (day_one + timedelta(days=1)).date().isoformat()
    assert "finished_at" in row.value


def test_the_worker_runs_retention_by_itself(
    app: Flask, default_list: MailingList, deliver: Mails
) -> None:
    deliver()  # one worker round, with nothing to send
    db.session.commit()
    row = db.session.get(ConsoleSetting, LAST_RUN_KEY)
    assert row is not None
    assert row.value["date"] == utcnow().date().isoformat()


def test_a_failing_run_does_not_fail_the_worker_round(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(now: datetime) -> PurgeReport:
        raise RuntimeError("database went away")

    monkeypatch.setattr("newsletter.privacy.retention.purge", broken)
    assert run_due_retention(app, later(1)) is None


def test_workers_starting_at_the_same_moment_run_the_rules_once(
    app: Flask, app_factory: Callable[..., Flask]
) -> None:
    """Four workers (four apps, so no shared process memory) start at once, on a
    first day (no console row yet) and on a later day (the row exists)."""
    workers = [app_factory() for _ in range(4)]
    db.session.commit()

    def race(now: datetime) -> list[PurgeReport | None]:
        barrier = threading.Barrier(len(workers))
        results: list[PurgeReport | None] = []
        errors: list[BaseException] = []

        def work(worker: Flask) -> None:
            with worker.app_context():
                try:
                    barrier.wait(timeout=30)
                    results.append(run_due_retention(worker, now))
                except BaseException as exc:
                    errors.append(exc)
                finally:
                    db.session.remove()

        threads = [threading.Thread(target=work, args=(w,)) for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        return results

    for now in (later(1), later(2)):
        results = race(now)
        assert len(results) == len(workers)
        assert sum(result is not None for result in results) == 1
