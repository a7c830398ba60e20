"""A continuous worker takes signups in its own loop, whatever its main loop is doing.

The main loop's rounds send mail and campaign batches, which take seconds; a
signup must not wait for them. These tests hold the main loop inside its
outbox batch and show that signups are still taken: one from this process
(woken by ``intake.arrived``) and one stored without that signal, as another
web process would (found by looking: every INTAKE_POLL_SECONDS on PostgreSQL,
every second on SQLite).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from newsletter.extensions import db
from newsletter.ledger import Evidence
from newsletter.models import Channel, MailingList, OutboxMessage, SignupIntake
from newsletter.subscriptions.intake import SignupRequest, accept_signup
from newsletter.worker import round as worker_round
from newsletter.worker.round import run_worker

from .conftest import ORIGIN


def count(model: type) -> int:
    """Committed rows of ``model``, read in a transaction of its own."""
    db.session.commit()
    found = int(db.session.scalar(select(func.count()).select_from(model)) or 0)
    db.session.commit()
    return found


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def busy_worker(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """A continuous worker whose main loop is held inside its outbox batch until
    the test ends; yields the event that is set once it is held there."""
    held, release, stop = threading.Event(), threading.Event(), threading.Event()

    def held_batch(*_args: Any, **_kwargs: Any) -> Any:
        held.set()
        release.wait(60)
        raise RuntimeError("released")  # the round fails; the worker goes on

    monkeypatch.setattr(worker_round, "process_batch", held_batch)
    db.session.commit()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(run_worker(app, stop, 0.2)))
    thread.start()
    try:
        assert held.wait(20), "the main loop never reached its outbox batch"
        yield held
    finally:
        release.set()
        stop.set()
        thread.join(30)
    assert not thread.is_alive(), "the worker did not stop"
    assert result, "run_worker did not return"


def test_a_signup_is_taken_while_the_main_loop_sends(
    client: FlaskClient, default_list: MailingList, busy_worker: threading.Event
) -> None:
    response = client.post(
        "/subscribe", data={"email": "now@example.org"}, headers={"Origin": ORIGIN}
    )
    assert response.status_code == 200
    wait_for(lambda: count(OutboxMessage) == 1, "the confirmation in the outbox")
    assert count(SignupIntake) == 0
    assert busy_worker.is_set()


def test_a_signup_stored_by_another_process_is_found(
    app: Flask, default_list: MailingList, busy_worker: threading.Event
) -> None:
    # accept_signup alone does not signal this process's worker.
    accept_signup(SignupRequest("elsewhere@example.org", Channel.API, Evidence()))
    wait_for(lambda: count(OutboxMessage) == 1, "the confirmation in the outbox")
    assert count(SignupIntake) == 0


def test_stopping_the_worker_stops_its_intake_loop(app: Flask, default_list: MailingList) -> None:
    stop = threading.Event()
    db.session.commit()
    before = {t.name for t in threading.enumerate()}
    thread = threading.Thread(target=run_worker, args=(app, stop, 0.1))
    thread.start()
    wait_for(lambda: any(t.name == "intake" for t in threading.enumerate()), "the intake loop")
    stop.set()
    thread.join(20)
    assert not thread.is_alive()
    assert {t.name for t in threading.enumerate()} - before == set()
