"""Faults on real PostgreSQL and SMTP: the database restarts under signups and under a
campaign, and a database error strikes in the middle of a signup.

The restarts use a PostgreSQL cluster of the test's own (fixtures/private_postgres.py),
so other test runs on the machine's server are not disturbed.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError

from newsletter.campaigns.service import campaign_progress, create_campaign, start_campaign
from newsletter.extensions import db
from newsletter.models import CampaignStatus, OutboxMessage, Subscriber, Subscription
from newsletter.subscriptions.lists import create_list

from .conftest import ORIGIN
from .fixtures.intake import drain_intake
from .fixtures.private_postgres import PrivatePostgres
from .fixtures.smtp import SMTPServer
from .test_sending_guarantees import (  # noqa: F401 (start_worker is a fixture)
    add_subscribers,
    postgres_only,
    start_worker,
)


def database_counts() -> tuple[int, int, int]:
    """(subscribers, subscriptions, outbox rows) as committed, once a worker has
    processed what the intake holds."""
    db.session.commit()
    drain_intake()
    counts = tuple(
        int(db.session.scalar(select(func.count()).select_from(model)) or 0)
        for model in (Subscriber, Subscription, OutboxMessage)
    )
    db.session.commit()
    return counts  # type: ignore[return-value]


def test_a_database_error_mid_signup_is_a_clear_503_with_nothing_written(
    app: Flask, client, default_list
) -> None:
    # A signup request writes one intake row: failing it must leave nothing.
    def fail(_conn: object, _cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO SIGNUP_INTAKE"):
            raise OperationalError(statement, {}, Exception("server closed the connection"))

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", fail)
    try:
        form = client.post(
            "/subscribe", data={"email": "a@example.org"}, headers={"Origin": ORIGIN}
        )
        api = client.post("/api/v1/subscriptions", json={"email": "b@example.org"})
    finally:
        event.remove(engine, "before_cursor_execute", fail)
    assert form.status_code == 503
    assert form.headers["Retry-After"] == "5"
    assert "try again" in form.get_data(as_text=True)
    assert api.status_code == 503
    assert "error" in api.get_json()
    assert database_counts() == (0, 0, 0)  # the subscriber row went with the rollback
    retry = client.post("/api/v1/subscriptions", json={"email": "b@example.org"})
    assert retry.status_code == 202
    assert database_counts() == (1, 1, 1)


def test_a_connection_whose_ping_fails_is_replaced_not_raised(
    app: Flask, client, default_list, monkeypatch
) -> None:
    """PostgreSQL going away during the pool's ping made psycopg raise a
    ProgrammingError (autocommit could not be restored) instead of the socket
    error, and the pool passed it on: a 500 mid-restart. Any failed ping now
    means a new connection."""
    assert client.get("/healthz").status_code == 200  # a connection is pooled
    with app.app_context():
        dialect = db.engine.dialect
    db.session.remove()  # the connection goes back to the pool, to be pinged at checkout
    dbapi_error = dialect.loaded_dbapi.ProgrammingError
    pings: list[str] = []

    def broken_ping(_dbapi_connection: object) -> bool:
        pings.append("ping")
        if len(pings) == 1:
            raise dbapi_error("can't change 'autocommit' now: connection in transaction status")
        return True

    monkeypatch.setattr(dialect, "do_ping", broken_ping)
    answer = client.post("/api/v1/subscriptions", json={"email": "ping@example.org"})
    assert pings, "the pooled connection was pinged"
    assert answer.status_code == 202
    assert database_counts() == (1, 1, 1)


def _app_on(private: PrivatePostgres, app_factory: Callable[..., Flask]) -> Flask:
    """An app on the private cluster, migrated, with the default list."""
    app = app_factory(DATABASE_URL=private.url)
    with app.app_context():
        upgrade()
        create_list("nyhedsbrev", "Nyhedsbrev", "Ja tak til nyhedsbrevet.", default=True)
        db.session.remove()
    return app


@postgres_only
def test_postgresql_restarting_during_signups(
    private_postgres: PrivatePostgres, app_factory: Callable[..., Flask]
) -> None:
    app = _app_on(private_postgres, app_factory)
    client = app.test_client()
    answers: dict[str, int] = {}
    stop = threading.Event()

    def sign_up() -> None:
        n = 0
        while not stop.is_set():
            email = f"p{n:05d}@example.org"
            with app.app_context():
                answers[email] = client.post(
                    "/api/v1/subscriptions", json={"email": email}
                ).status_code
            n += 1
            time.sleep(0.01)

    signups = threading.Thread(target=sign_up)
    signups.start()
    try:
        time.sleep(1.0)
        private_postgres.stop()
        time.sleep(2.0)
        private_postgres.start()
        time.sleep(2.0)
    finally:
        stop.set()
        signups.join(timeout=30)

    statuses = Counter(answers.values())
    assert set(statuses) <= {202, 503}, statuses
    assert statuses[503] > 0, "the outage was seen"
    accepted_after = [e for e in sorted(answers)[-20:] if answers[e] == 202]
    assert accepted_after, "signups work again once the database is back"
    with app.app_context():
        drain_intake()  # the worker does the rest of each accepted signup
        stored = dict(
            db.session.execute(
                select(Subscriber.email_key, func.count(OutboxMessage.id))
                .join(OutboxMessage, OutboxMessage.subscriber_id == Subscriber.id, isouter=True)
                .group_by(Subscriber.email_key)
            ).all()
        )
        subscribed = set(db.session.scalars(select(Subscriber.email_key).join(Subscription)))
    accepted = {e for e, status in answers.items() if status == 202}
    assert accepted <= set(stored), "nothing accepted was lost"
    # Nothing half-written: each stored signup has its subscription and one mail.
    assert all(count == 1 for count in stored.values()), stored
    assert set(stored) <= subscribed


@postgres_only
def test_postgresql_restarting_while_a_campaign_sends(
    private_postgres: PrivatePostgres,
    app_factory: Callable[..., Flask],
    smtp_server: SMTPServer,
    start_worker,  # noqa: F811
) -> None:
    app = _app_on(private_postgres, app_factory)
    with app.app_context():
        from newsletter.models import MailingList

        mailing_list = db.session.scalars(select(MailingList)).one()
        addresses = add_subscribers(mailing_list, 400)
        campaign_id = create_campaign("nyhedsbrev", "Under fire", "Hej {{ name }}").id
        start_campaign(campaign_id)
        db.session.remove()
    worker = start_worker(
        DATABASE_URL=private_postgres.url,
        SEND_RATE=100,
        DELIVERY_BATCH_SIZE=20,
        DELIVERY_LEASE_SECONDS=5,
    )

    def received() -> int:
        with smtp_server.recorder.lock:
            return len(smtp_server.recorder.received)

    deadline = time.monotonic() + 30
    while received() < 60 and time.monotonic() < deadline:
        time.sleep(0.05)
    private_postgres.stop()
    time.sleep(3)
    private_postgres.start()

    def done() -> bool:
        with app.app_context():
            try:
                status = campaign_progress(campaign_id).status
            finally:
                db.session.remove()
        return status == CampaignStatus.DONE

    deadline = time.monotonic() + 90
    while not done():
        assert time.monotonic() < deadline, worker.output()[-3000:]
        time.sleep(0.2)
    worker.popen.terminate()
    worker.popen.wait(timeout=30)

    with smtp_server.recorder.lock:
        counts = Counter(r for m in smtp_server.recorder.received for r in m.rcpt_tos)
    assert set(counts) == set(addresses), "nobody was lost"
    twice = [a for a, n in counts.items() if n > 1]
    # At most the batch in flight when the database went away is sent again.
    assert len(twice) <= 20, twice
    assert "round failed; will try again" in worker.output()
