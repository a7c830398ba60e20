"""A signup waiting in the intake is personal data like any other: erasure deletes it,
retention deletes it once failed and old, and the data export shows it.

An intake row holds the address, name, IP, user agent and source page from the
moment the request is answered until a worker processes it; a row the worker
could not process stays, failed, until staff act. Erasure deletes the rows
before the subscriber, in the same transaction, so a worker that claimed one
finds nothing to take and creates nothing (its DELETE is fenced by its lease).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import select
from werkzeug.test import TestResponse

from newsletter.extensions import db
from newsletter.ledger import Evidence
from newsletter.models import AuditEntry, Channel, MailingList, SignupIntake, Subscriber, utcnow
from newsletter.privacy.data_export import subscriber_data_export
from newsletter.privacy.erasure import (
    AddressErasure,
    ErasureResult,
    erase_address,
    erase_subscriber,
)
from newsletter.privacy.retention import purge
from newsletter.subscriptions import intake_run
from newsletter.tokens import Purpose, make_token

from .conftest import BACKEND, ORIGIN
from .fixtures.intake import drain_intake
from .fixtures.mailflow import link_path

Mails = Callable[[], list[EmailMessage]]
Post = Callable[..., TestResponse]

postgres_only = pytest.mark.skipif(BACKEND != "postgresql", reason="PostgreSQL row locks")

ADDRESS = "Ada@Example.org"


@pytest.fixture
def post_form(client: FlaskClient) -> Post:
    """POST a public form from our own origin and nothing more: here the signup
    must wait in the intake (mailflow's post_form lets a worker take it)."""

    def post(path: str, data: dict[str, object]) -> TestResponse:
        return client.post(path, data=data, headers={"Origin": ORIGIN})

    return post


def intake() -> list[tuple[str, str | None]]:
    """(email_key, status) of every intake row, oldest first."""
    db.session.commit()
    rows = [
        (row.email_key, "failed" if row.failed_at else "waiting")
        for row in db.session.scalars(select(SignupIntake).order_by(SignupIntake.id))
    ]
    db.session.commit()
    return rows


def subscribers() -> list[str]:
    """Addresses of the subscribers that exist now."""
    db.session.commit()
    found = sorted(db.session.scalars(select(Subscriber.email_key)))
    db.session.commit()
    return found


def sign_up(post_form: Post, email: str, **fields: object) -> None:
    """Post the signup form: one intake row waits, nothing else is written."""
    response = post_form("/subscribe", {"email": email, **fields})
    assert response.status_code == 200, response.get_data(as_text=True)


def fail_last(reason: str = "list 9 no longer exists", received: datetime | None = None) -> None:
    """Mark the newest intake row failed, as the worker does with a row it cannot do."""
    db.session.commit()
    row = db.session.scalars(select(SignupIntake).order_by(SignupIntake.id.desc())).first()
    assert row is not None
    row.failed_at, row.last_error = utcnow(), reason
    if received is not None:
        row.received_at = received
    db.session.commit()


def age_intake(days: float) -> None:
    """Move every intake row's request time ``days`` into the past."""
    db.session.commit()
    rows = db.session.scalars(select(SignupIntake)).all()
    for row in rows:
        row.received_at = row.received_at - timedelta(days=days)
    db.session.commit()


def audits() -> list[tuple[str, str, str]]:
    """(action, object type, actor) of every audit entry, oldest first."""
    db.session.commit()
    entries = [
        (e.action, e.object_type, e.actor_email)
        for e in db.session.scalars(select(AuditEntry).order_by(AuditEntry.id))
    ]
    db.session.commit()
    return entries


def in_thread(app: Flask, work: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Start ``work`` in a thread with its own app context (its own connection);
    the list gets its value or its exception."""
    outcome: list[Any] = []

    def run() -> None:
        with app.app_context():
            try:
                outcome.append(work())
            except Exception as exc:  # reported by the test
                outcome.append(exc)
            finally:
                db.session.remove()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


# -- erasure ------------------------------------------------------------------------------


def test_erasing_a_subscriber_deletes_their_waiting_and_failed_intake_rows(
    default_list: MailingList, post_form: Post, subscribed: Callable[..., EmailMessage]
) -> None:
    subscribed(ADDRESS)
    sign_up(post_form, ADDRESS, name="Ada again")  # re-submitted: waits
    sign_up(post_form, "ADA@example.org")
    fail_last()
    sign_up(post_form, "other@example.org")
    assert intake() == [
        ("ada@example.org", "waiting"),
        ("ada@example.org", "failed"),
        ("other@example.org", "waiting"),
    ]
    ada = db.session.scalars(select(Subscriber.id)).one()

    result = erase_subscriber(ada, channel=Channel.STAFF, actor=None, evidence=Evidence())

    assert result.intake_rows == 2
    assert intake() == [("other@example.org", "waiting")]
    assert subscribers() == []
    drain_intake()
    assert subscribers() == ["other@example.org"]


def test_erase_me_on_the_preference_page_deletes_a_waiting_signup_too(
    client: FlaskClient,
    default_list: MailingList,
    post_form: Post,
    subscribed: Callable[..., EmailMessage],
) -> None:
    welcome = subscribed(ADDRESS)
    sign_up(post_form, ADDRESS, name="Ada Lovelace")
    assert intake() == [("ada@example.org", "waiting")]
    erase_path = f"{link_path(welcome, 'manage')}/erase"
    assert client.post(erase_path, data={"erase": "yes"}).status_code == 200
    assert intake() == []
    assert subscribers() == []
    drain_intake()
    assert subscribers() == []  # nothing was left to bring the person back


def test_the_erase_command_deletes_an_address_that_only_waits_in_the_intake(
    runner: FlaskCliRunner, default_list: MailingList, post_form: Post, deliver: Mails
) -> None:
    sign_up(post_form, ADDRESS, name="Ada Lovelace")
    sign_up(post_form, "ada@example.org")
    fail_last()
    sign_up(post_form, "other@example.org")
    assert subscribers() == []

    refused = runner.invoke(args=["privacy", "erase", ADDRESS], input="n\n")
    assert refused.exit_code == 1
    assert len(intake()) == 3  # not confirmed: nothing happened

    result = runner.invoke(args=["privacy", "erase", ADDRESS, "--yes"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "no subscriber has that address",
        "signups deleted from the intake: 2",
    ]
    assert intake() == [("other@example.org", "waiting")]
    assert audits() == [("intake.erase", "signup_intake", "(command line)")]
    mails = deliver()  # the worker processes what is left
    assert [str(m["To"]) for m in mails] == ["other@example.org"]
    assert subscribers() == ["other@example.org"]

    again = runner.invoke(args=["privacy", "erase", ADDRESS, "--yes"])
    assert again.exit_code == 1
    assert "Nothing is held about that address." in again.output
    invalid = runner.invoke(args=["privacy", "erase", "not an address", "--yes"])
    assert invalid.exit_code == 2


def test_the_erase_command_erases_a_subscriber_and_their_waiting_signup(
    runner: FlaskCliRunner,
    default_list: MailingList,
    post_form: Post,
    subscribed: Callable[..., EmailMessage],
) -> None:
    subscribed(ADDRESS)
    sign_up(post_form, ADDRESS)
    ada = db.session.scalars(select(Subscriber.id)).one()
    db.session.commit()

    result = runner.invoke(args=["privacy", "erase", "ada@EXAMPLE.org", "--yes"])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"erased subscriber #{ada}: ledger events stripped 3,")
    assert lines[1] == "signups deleted from the intake: 1"
    assert intake() == []
    assert subscribers() == []
    assert audits() == [
        ("subscriber.erase", "subscriber", "(command line)"),
        ("intake.erase", "signup_intake", "(command line)"),
    ]


def test_erasure_between_the_workers_claim_and_its_work_leaves_nothing_to_create(
    app: Flask, default_list: MailingList, post_form: Post, monkeypatch: pytest.MonkeyPatch
) -> None:
    sign_up(post_form, ADDRESS, name="Ada Lovelace")
    db.session.commit()
    process = intake_run._process
    erased: list[Any] = []

    def erase_first(ids: list[int], lease: Any) -> None:
        # The rows are claimed (committed); another connection erases the address.
        thread, outcome = in_thread(
            app,
            lambda: erase_address(ADDRESS, channel=Channel.STAFF, actor=None, evidence=Evidence()),
        )
        thread.join(30)
        erased.extend(outcome)
        process(ids, lease)

    monkeypatch.setattr(intake_run, "_process", erase_first)
    assert drain_intake() == 1

    (result,) = erased
    assert (result.subscriber, result.intake_rows) == (None, 1)
    assert intake() == []
    assert subscribers() == []


@postgres_only
def test_erasure_waits_for_a_worker_that_took_the_row_and_erases_what_it_wrote(
    app: Flask, default_list: MailingList, post_form: Post, monkeypatch: pytest.MonkeyPatch
) -> None:
    sign_up(post_form, ADDRESS, name="Ada Lovelace")
    db.session.commit()
    apply = intake_run.apply_signups
    started: list[tuple[threading.Thread, list[Any]]] = []

    def erase_meanwhile(rows: Any) -> None:
        # The worker has deleted the row (locked until its commit) and not yet
        # written the subscriber: the erasure must wait, not miss what follows.
        thread, outcome = in_thread(
            app,
            lambda: erase_address(ADDRESS, channel=Channel.STAFF, actor=None, evidence=Evidence()),
        )
        started.append((thread, outcome))
        time.sleep(0.5)
        assert thread.is_alive()
        assert outcome == []
        apply(rows)

    monkeypatch.setattr(intake_run, "apply_signups", erase_meanwhile)
    assert drain_intake() == 1
    ((thread, outcome),) = started
    thread.join(30)
    (result,) = outcome
    assert isinstance(result, AddressErasure), result
    assert result.subscriber is not None  # the worker's subscriber, erased after its commit
    assert result.intake_rows == 0  # the worker deleted the row
    assert intake() == []
    assert subscribers() == []


@postgres_only
def test_erasing_a_known_subscriber_while_the_worker_applies_their_signup_does_not_deadlock(
    app: Flask,
    default_list: MailingList,
    make_list: Callable[..., MailingList],
    post_form: Post,
    subscribed: Callable[..., EmailMessage],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_list("tech", "Tech")
    subscribed(ADDRESS)
    sign_up(post_form, ADDRESS, list="tech")
    ada = db.session.scalars(select(Subscriber.id)).one()
    db.session.commit()
    apply = intake_run.apply_signups
    started: list[tuple[threading.Thread, list[Any]]] = []

    def erase_meanwhile(rows: Any) -> None:
        thread, outcome = in_thread(
            app,
            lambda: erase_subscriber(ada, channel=Channel.STAFF, actor=None, evidence=Evidence()),
        )
        started.append((thread, outcome))
        time.sleep(0.5)
        apply(rows)  # locks the subscriber: the erasure must not hold it yet

    monkeypatch.setattr(intake_run, "apply_signups", erase_meanwhile)
    assert drain_intake() == 1
    ((thread, outcome),) = started
    thread.join(30)
    (result,) = outcome
    assert isinstance(result, ErasureResult), result  # a deadlock would be an OperationalError
    assert result.subscriber_id == ada
    assert intake() == []
    assert subscribers() == []


# -- retention ----------------------------------------------------------------------------


def test_retention_deletes_failed_signups_after_the_unconfirmed_period_and_never_waiting_ones(
    app: Flask, default_list: MailingList, post_form: Post, caplog: pytest.LogCaptureFixture
) -> None:
    sign_up(post_form, "waiting@example.org")
    sign_up(post_form, "failed.old@example.org")
    fail_last()
    sign_up(post_form, "failed.new@example.org")
    age_intake(25)
    fail_last(received=utcnow() - timedelta(days=2))
    now = utcnow()

    assert purge(now + timedelta(days=4)).failed_signups_deleted == 0  # 29 days old

    with caplog.at_level(logging.INFO, logger="newsletter.privacy.retention"):
        report = purge(now + timedelta(days=6))  # 31 days; the newer one 8, the waiting one 31
    assert report.failed_signups_deleted == 1
    assert "'failed_signups_deleted': 1" in caplog.text
    assert intake() == [
        ("waiting@example.org", "waiting"),
        ("failed.new@example.org", "failed"),
    ]

    assert purge(now + timedelta(days=400)).failed_signups_deleted == 1
    assert intake() == [("waiting@example.org", "waiting")]  # waits for a worker, always kept


def test_the_rule_is_off_with_the_unconfirmed_period(
    app: Flask, default_list: MailingList, post_form: Post
) -> None:
    app.config["RETENTION_UNCONFIRMED_DAYS"] = 0
    sign_up(post_form, "failed@example.org")
    fail_last()
    assert purge(utcnow() + timedelta(days=400)).failed_signups_deleted == 0
    assert intake() == [("failed@example.org", "failed")]


def test_the_purge_command_counts_failed_signups(
    runner: FlaskCliRunner,
    default_list: MailingList,
    post_form: Post,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sign_up(post_form, "failed@example.org")
    fail_last()
    monkeypatch.setattr("newsletter.privacy.commands.utcnow", lambda: utcnow() + timedelta(31))
    result = runner.invoke(args=["purge"])
    assert result.exit_code == 0, result.output
    assert "failed signups deleted from the intake: 1" in result.output.splitlines()
    assert intake() == []


# -- the data export ----------------------------------------------------------------------


def test_the_download_shows_a_waiting_and_a_failed_signup_of_the_address(
    client: FlaskClient,
    default_list: MailingList,
    make_list: Callable[..., MailingList],
    post_form: Post,
    subscribed: Callable[..., EmailMessage],
) -> None:
    make_list("tech", "Tech")
    subscribed(ADDRESS, name="Ada")
    sign_up(post_form, "ada@example.org", name="Ada Lovelace", list="tech")
    sign_up(post_form, ADDRESS, list="nyhedsbrev")
    fail_last("list 1 was archived after the signup")
    sign_up(post_form, "other@example.org")
    subscriber = db.session.scalars(select(Subscriber)).one()
    token = make_token(Purpose.DATA_EXPORT, subscriber.token_key)
    db.session.commit()

    response = client.post(f"/data/{token}")
    assert response.status_code == 200
    document = json.loads(response.get_data(as_text=True))

    waiting, failed = document["signups_waiting"]
    assert waiting["status"] == "waiting"
    assert (waiting["email"], waiting["name"], waiting["channel"]) == (
        "ada@example.org",
        "Ada Lovelace",
        "form",
    )
    assert [(a["list"], a["list_name"]) for a in waiting["lists"]] == [("tech", "Tech")]
    assert waiting["lists"][0]["consent_text"]["version"] == 1
    assert waiting["lists"][0]["consent_text"]["text"]
    assert waiting["ip"]
    assert waiting["user_agent"] is not None
    assert waiting["received_at"]
    assert waiting["failed_at"] is None
    assert "privacy_policy_version" in waiting
    assert "source_url" in waiting
    assert failed["status"] == "failed"
    assert failed["email"] == "Ada@example.org"
    assert [a["list"] for a in failed["lists"]] == ["nyhedsbrev"]
    assert failed["failed_at"] is not None
    assert "last_error" not in failed
    assert "archived" not in json.dumps(document)
    assert "other@example.org" not in json.dumps(document)
    assert document == {
        **subscriber_data_export(subscriber.id),
        "generated_at": document["generated_at"],
    }


def test_a_subscriber_with_nothing_waiting_has_an_empty_intake_section(
    default_list: MailingList, subscribed: Callable[..., EmailMessage]
) -> None:
    subscribed(ADDRESS)
    subscriber_id = db.session.scalars(select(Subscriber.id)).one()
    assert subscriber_data_export(subscriber_id)["signups_waiting"] == []


def test_the_export_command_shows_an_address_that_only_waits_in_the_intake(
    runner: FlaskCliRunner, default_list: MailingList, post_form: Post
) -> None:
    sign_up(post_form, ADDRESS, name="Ada Lovelace")
    result = runner.invoke(args=["privacy", "export", "ada@example.org"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["profile"] is None
    assert (document["subscriptions"], document["consent_history"]) == ([], [])
    (row,) = document["signups_waiting"]
    assert (row["status"], row["email"], row["name"]) == (
        "waiting",
        "Ada@example.org",
        "Ada Lovelace",
    )
    assert audits() == [("intake.export", "signup_intake", "(command line)")]
    unknown = runner.invoke(args=["privacy", "export", "nobody@example.org"])
    assert unknown.exit_code == 1
    assert "No subscriber has that address." in unknown.output
