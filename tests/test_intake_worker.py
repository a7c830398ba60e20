"""The signup intake's guarantees, with real components (issue 16, point 2).

- A ``newsletter worker`` process killed with SIGKILL inside its batch, or at a
  random moment, loses and doubles nothing: its rows come back when its lease
  runs out and are done once by another worker (PostgreSQL).
- A row that cannot be processed (a list gone or archived meanwhile, a row
  that raises, a row that kept killing workers) is marked failed with its
  reason and never blocks the rows behind it; a database that goes away is
  not the row's fault and marks nothing failed.
- Workers racing for the same intake, with the same address in it several
  times, make one subscriber of each; a worker whose lease was taken over
  deletes nothing.
- Submitting twice while the first row waits changes nothing visible.
- A signup request stores one intake row with all the evidence, and nothing
  keyed by the address: the ledger events made from it later carry the
  request's time and evidence.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.utils import parseaddr
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade
from sqlalchemy import delete, event, func, select, update
from sqlalchemy.exc import OperationalError

from newsletter.extensions import db
from newsletter.lease import Lease, claim
from newsletter.models import (
    ConsentEvent,
    ConsentEventType,
    ConsentText,
    MailingList,
    OutboxMessage,
    SignupIntake,
    Subscriber,
    Subscription,
    utcnow,
)
from newsletter.privacy.policy import import_policy
from newsletter.subscriptions import intake_run
from newsletter.subscriptions.intake_run import INTAKE, process_intake
from newsletter.subscriptions.lists import create_list, current_consent_text
from newsletter.transaction import unit_of_work

from .conftest import ORIGIN
from .fixtures.intake import drain_intake
from .fixtures.intake_worker import (
    PERSONAL_TABLES,
    assert_exactly_once,
    backends_waiting_for_a_lock,
    busy_backends,
    leased_rows,
    ledger_head_held,
    outcome,
    queue_signups,
    queue_signups_in_bulk,
    statements_sent,
)
from .fixtures.mailflow import Deliver
from .fixtures.private_postgres import PrivatePostgres
from .test_sending_guarantees import (  # noqa: F401 (start_worker is a fixture)
    StartWorker,
    WorkerProcess,
    postgres_only,
    start_worker,
    wait_for,
)

LEASE = 2  # seconds: INTAKE_LEASE_SECONDS of the killed and killing workers


def two_lists() -> tuple[MailingList, MailingList]:
    """The default list "nyhedsbrev" and a second list "tips"."""
    news = create_list("nyhedsbrev", "Nyhedsbrev", "Ja tak til nyhedsbrevet.", default=True)
    tips = create_list("tips", "Tips", "Ja tak til tips.")
    db.session.commit()
    return news, tips


def intake_rows() -> list[Any]:
    """Every intake row (its columns), oldest first, as committed."""
    db.session.commit()
    table = SignupIntake.__table__
    rows = list(db.session.execute(select(table).order_by(table.c.id)))
    db.session.commit()
    return rows


def count(model: type) -> int:
    """Rows of a table, as committed."""
    db.session.commit()
    found = int(db.session.scalar(select(func.count()).select_from(model)) or 0)
    db.session.commit()
    return found


def wait_past_leases() -> None:
    """Sleep until every lease now on an intake row has run out."""
    leases = [row.lease_until for row in leased_rows()]
    if leases:
        time.sleep(max(0.0, (max(leases) - utcnow()).total_seconds()) + 0.05)


def kill(worker: WorkerProcess) -> None:
    """SIGKILL a worker process and see it die of it."""
    worker.popen.send_signal(signal.SIGKILL)
    assert worker.popen.wait(timeout=10) == -signal.SIGKILL


def owner_pid(row: Any) -> int:
    """The process id in a leased row's owner name (host:pid:thread)."""
    return int(row.leased_by.split(":")[1])


TAKEOVER = re.compile(r"rows \[([\d, ]+)\] were claimed again after [^:\s]+:(\d+):\d+'s lease")


def takeovers_logged(workers: list[WorkerProcess]) -> dict[int, set[int]]:
    """Process id of a dead owner -> the rows other workers logged taking over from it."""
    taken: dict[int, set[int]] = {}
    for worker in workers:
        for ids, pid in TAKEOVER.findall(worker.output()):
            taken.setdefault(int(pid), set()).update(int(i) for i in ids.split(", "))
    return taken


# --- 1. SIGKILL ------------------------------------------------------------------------------


@postgres_only
def test_workers_killed_with_sigkill_lose_and_double_no_signup(
    app: Flask,
    start_worker: StartWorker,  # noqa: F811
) -> None:
    """3,000 accepted signups; workers killed inside a batch (claim committed,
    writes done up to the ledger append, no commit) twice in a row, then four at
    random moments of their work; then one worker drains the rest. Every address
    is one subscriber, once, with its lists, mail and events."""
    app.config.update(INTAKE_LEASE_SECONDS=LEASE)
    two_lists()
    wanted = {
        f"kill{n:04d}@example.org": ["nyhedsbrev", "tips"] if n % 3 == 0 else ["nyhedsbrev"]
        for n in range(3000)
    }
    queue_signups_in_bulk(wanted)
    # One mail a round: the confirmations are sent, without holding up the intake.
    # Up to six kills can hit the same rows, and the default INTAKE_MAX_ATTEMPTS
    # (5) would rightly give them up: this test is about the others.
    settings = {
        "INTAKE_LEASE_SECONDS": LEASE,
        "INTAKE_BATCH_SIZE": 200,
        "INTAKE_MAX_ATTEMPTS": 20,
        "OUTBOX_BATCH_SIZE": 1,
    }

    # 1. Stopped at the ledger append of its first batch, then killed.
    with ledger_head_held():
        victim = start_worker("--poll", "0.1", **settings)
        wait_for(lambda: backends_waiting_for_a_lock() == 1, 60, "the worker's batch")
        claimed = leased_rows()
        kill(victim)
    wait_for(lambda: busy_backends() == 0, 30, "the killed worker's session to end")
    assert len(claimed) == 200
    assert {(row.attempts, owner_pid(row)) for row in claimed} == {(1, victim.pid)}
    assert leased_rows() == claimed, "the killed batch was rolled back, rows and lease kept"
    assert (count(Subscriber), count(ConsentEvent), count(OutboxMessage)) == (0, 0, 0)

    # 2. Its lease runs out; the next worker takes the oldest of its rows over,
    # alone (attempt 2, logged: a row claimed before is retried by itself, so a
    # row that kills its worker cannot take its batch mates down), and is killed
    # at the same place.
    wait_past_leases()
    with ledger_head_held():
        second = start_worker("--poll", "0.1", **settings)
        wait_for(lambda: backends_waiting_for_a_lock() == 1, 60, "the second worker's batch")
        retaken = [row for row in leased_rows() if row.attempts == 2]
        wait_for(lambda: "claimed again" in second.output(), 10, "the takeover in the log")
        kill(second)
    wait_for(lambda: busy_backends() == 0, 30, "the killed worker's session to end")
    assert [row.id for row in retaken] == [claimed[0].id]
    assert {(row.attempts, owner_pid(row)) for row in retaken} == {(2, second.pid)}
    rest = [row for row in leased_rows() if row.id != claimed[0].id]
    assert {(row.attempts, owner_pid(row)) for row in rest} == {(1, victim.pid)}
    takeover = next(line for line in second.output().splitlines() if "claimed again" in line)
    assert f":{victim.pid}:" in takeover
    assert str([claimed[0].id]) in takeover
    assert count(Subscriber) == 0

    # 3. Killed at random moments of their work (after their first claim); what
    # each left under its lease is taken over later, and the taker logs it.
    seed = random.randrange(1_000_000)
    chance = random.Random(seed)
    print(f"random kills: seed {seed}")
    workers = [second]
    left: dict[int, set[int]] = {}
    for _ in range(4):
        worker = start_worker("--poll", "0.1", **settings)
        workers.append(worker)

        def working(pid: int = worker.pid) -> bool:
            return count(SignupIntake) == 0 or any(owner_pid(row) == pid for row in leased_rows())

        wait_for(working, 60, "the worker's first claim")
        time.sleep(chance.uniform(0.0, 0.8))
        kill(worker)
        wait_for(lambda: busy_backends() == 0, 30, "the killed worker's session to end")
        left[worker.pid] = {row.id for row in leased_rows() if owner_pid(row) == worker.pid}
        if count(SignupIntake) == 0:
            break
    print(f"rows left under the lease of each killed worker: {[len(v) for v in left.values()]}")

    # 4. One worker drains what is left once the dead workers' leases run out.
    last = start_worker("--poll", "0.1", **settings)
    try:
        wait_for(lambda: count(SignupIntake) == 0, 120, "the intake to drain")
    except AssertionError:
        waiting = [
            (r.id, r.attempts, r.leased_by, r.failed_at, r.last_error) for r in intake_rows()
        ]
        raise AssertionError(
            f"left: {waiting[:10]}\nlast worker:\n{last.output()[-3000:]}"
        ) from None
    last.popen.send_signal(signal.SIGTERM)
    last.finish()
    assert_exactly_once(wanted)
    taken = takeovers_logged([*workers, last])
    assert {pid: ids - taken.get(pid, set()) for pid, ids in left.items()} == {
        pid: set() for pid in left
    }, "every row a killed worker left was taken over, and that was logged"


# --- 2. poison rows --------------------------------------------------------------------------


def test_rows_that_cannot_be_done_fail_with_their_reason_and_block_nothing(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    """In one batch: a row for a list deleted meanwhile, one for a list archived
    meanwhile, one naming another list's consent text, and one that raises (its
    policy does not exist: the ledger's foreign key refuses the event). Each is
    marked failed with its reason; the good rows around them are done."""
    news, tips = two_lists()
    gone = create_list("gone", "Gone", "Ja tak.")
    old = create_list("old", "Old", "Ja tak.")
    db.session.commit()
    gone_id, old_id, tips_id = gone.id, old.id, tips.id
    wanted = {f"good{n}@example.org": ["nyhedsbrev"] for n in range(6)}
    queue_signups(dict(list(wanted.items())[:2]))
    queue_signups({"deleted@example.org": ["gone"], "archived@example.org": ["nyhedsbrev", "old"]})
    queue_signups({"stranger@example.org": ["tips"], "bug@example.org": ["nyhedsbrev"]})
    queue_signups(dict(list(wanted.items())[2:]))
    # Meanwhile: a list deleted, one archived, a row naming another list's text, a bug.
    db.session.execute(delete(ConsentText).where(ConsentText.list_id == gone_id))
    db.session.execute(delete(MailingList).where(MailingList.id == gone_id))
    db.session.execute(
        update(MailingList).where(MailingList.id == old_id).values(archived_at=utcnow())
    )
    news_text = current_consent_text(news.id).id
    db.session.execute(
        update(SignupIntake)
        .where(SignupIntake.email == "stranger@example.org")
        .values(terms=[[tips_id, news_text]])
    )
    db.session.execute(
        update(SignupIntake)
        .where(SignupIntake.email == "bug@example.org")
        .values(policy_version_id=999_999)
    )
    db.session.commit()

    with caplog.at_level(logging.WARNING, logger="newsletter.subscriptions.intake_run"):
        assert drain_intake() == 10
    assert drain_intake() == 0  # failed rows are not claimed again

    assert_exactly_once(wanted, left_in_intake=4)
    failed = {row.email: row for row in intake_rows()}
    assert set(failed) == {
        "deleted@example.org",
        "archived@example.org",
        "stranger@example.org",
        "bug@example.org",
    }
    reasons = {email: row.last_error for email, row in failed.items()}
    assert reasons["deleted@example.org"] == f"list {gone_id} no longer exists"
    assert reasons["archived@example.org"] == f"list {old_id} was archived after the signup"
    assert reasons["stranger@example.org"] == (
        f"consent text {news_text} of list {tips_id} no longer exists"
    )
    assert reasons["bug@example.org"].startswith("IntegrityError: ")
    assert all(row.failed_at is not None and row.lease_until is None for row in failed.values())
    assert "a batch of 10 failed; doing its rows one at a time" in caplog.text
    assert f"intake: row {failed['bug@example.org'].id} failed" in caplog.text


class Killed(BaseException):
    """What a worker killed in the middle of a batch would not get to handle."""


def test_a_row_claimed_max_attempts_times_is_given_up_and_the_rows_behind_it_are_done(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row that killed its worker (claimed, never committed) twice, with
    INTAKE_MAX_ATTEMPTS 2: the third claim takes it alone and gives it up as
    failed, and the next claim takes the rows behind it, which are done."""
    app.config.update(INTAKE_MAX_ATTEMPTS=2, INTAKE_LEASE_SECONDS=0.3)
    two_lists()
    queue_signups({"killer@example.org": ["nyhedsbrev"]})

    def die(ids: object, lease: object) -> None:
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(intake_run, "_process", die)
        for attempt in (1, 2):
            wait_past_leases()
            with pytest.raises(Killed):
                process_intake("doomed worker")
            assert [(row.attempts, row.failed_at) for row in intake_rows()] == [(attempt, None)]
    wanted = {f"behind{n}@example.org": ["nyhedsbrev"] for n in range(3)}
    queue_signups(wanted)
    wait_past_leases()
    assert process_intake("next worker") == 1  # the retried row, alone
    assert process_intake("next worker") == 3

    assert_exactly_once(wanted, left_in_intake=1)
    (row,) = intake_rows()
    assert (row.email, row.attempts, row.last_error) == (
        "killer@example.org",
        3,
        "given up after 2 attempts",
    )
    assert row.failed_at is not None
    assert row.lease_until is None


def test_a_row_that_keeps_killing_its_worker_does_not_take_its_batch_mates_down(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The killer row is claimed in one batch with three good rows, and every
    worker that works on it dies. Only the killer may end up failed; the good
    rows claimed with it must be done."""
    app.config.update(INTAKE_MAX_ATTEMPTS=2, INTAKE_LEASE_SECONDS=0.3)
    two_lists()
    queue_signups({"killer@example.org": ["nyhedsbrev"]})
    wanted = {f"mate{n}@example.org": ["nyhedsbrev"] for n in range(3)}
    queue_signups(wanted)
    process = intake_run._process
    emails = dict(db.session.execute(select(SignupIntake.id, SignupIntake.email)).all())
    db.session.commit()

    def deadly(ids: list[int], lease: Lease) -> None:
        if "killer@example.org" in {emails[i] for i in ids}:
            raise Killed
        process(ids, lease)

    monkeypatch.setattr(intake_run, "_process", deadly)
    for _ in range(6):  # rounds of workers, each dying or not
        wait_past_leases()
        with contextlib.suppress(Killed):
            process_intake("worker")
    assert_exactly_once(wanted, left_in_intake=1)


@contextmanager
def database_gone_for(email: str, also_in_batch: bool = True) -> Iterator[list[str]]:
    """The database connection breaks when a ledger event of ``email`` is written
    (with ``also_in_batch`` False: only when that row is written alone)."""
    broken: list[str] = []

    def cut(
        _conn: object, _cursor: object, statement: str, parameters: object, *args: object
    ) -> None:
        values = str(parameters)
        if not statement.lstrip().upper().startswith("INSERT INTO CONSENT_EVENTS"):
            return
        if email in values and (also_in_batch or "@example.org" not in values.replace(email, "")):
            broken.append(email)
            raise OperationalError(statement, {}, Exception("server closed the connection"))

    engine = db.engine
    event.listen(engine, "before_cursor_execute", cut)
    try:
        yield broken
    finally:
        event.remove(engine, "before_cursor_execute", cut)


def test_a_database_that_goes_away_mid_batch_marks_no_row_failed(app: Flask) -> None:
    """The connection breaks in the batch's ledger append: the round ends with the
    error, nothing is written, no row is failed; once the lease runs out, the
    rows are done once."""
    app.config.update(INTAKE_LEASE_SECONDS=0.3)
    two_lists()
    wanted = {f"outage{n}@example.org": ["nyhedsbrev", "tips"] for n in range(5)}
    queue_signups(wanted)
    with database_gone_for("outage2@example.org") as broken, pytest.raises(OperationalError):
        process_intake("unlucky worker")
    assert broken
    rows = intake_rows()
    assert len(rows) == 5
    assert {(row.attempts, row.failed_at, row.last_error) for row in rows} == {(1, None, None)}
    assert (count(Subscriber), count(ConsentEvent), count(OutboxMessage)) == (0, 0, 0)
    wait_past_leases()
    assert drain_intake() == 5
    assert_exactly_once(wanted)


def test_a_database_that_goes_away_while_rows_are_done_one_at_a_time_fails_only_the_bad_row(
    app: Flask,
) -> None:
    """A batch with a bad row falls back to one row at a time; the connection
    breaks at the second row: the bad row is failed, the others wait, unfailed,
    and are done once later."""
    app.config.update(INTAKE_LEASE_SECONDS=0.3)
    two_lists()
    queue_signups({"bug@example.org": ["nyhedsbrev"]})
    wanted = {f"after{n}@example.org": ["nyhedsbrev"] for n in range(3)}
    queue_signups(wanted)
    db.session.execute(
        update(SignupIntake)
        .where(SignupIntake.email == "bug@example.org")
        .values(policy_version_id=999_999)
    )
    db.session.commit()
    with (
        database_gone_for("after0@example.org", also_in_batch=False) as broken,
        pytest.raises(OperationalError),
    ):
        process_intake("unlucky worker")
    assert broken == ["after0@example.org"]
    states = {row.email: (row.failed_at is not None, row.attempts) for row in intake_rows()}
    assert states == {
        "bug@example.org": (True, 1),
        "after0@example.org": (False, 1),
        "after1@example.org": (False, 1),
        "after2@example.org": (False, 1),
    }
    wait_past_leases()
    assert drain_intake() == 3
    assert_exactly_once(wanted, left_in_intake=1)


@postgres_only
def test_postgresql_stopping_mid_batch_marks_no_row_failed(
    private_postgres: PrivatePostgres, app_factory: Callable[..., Flask]
) -> None:
    """The server stops (immediate: connections cut) while a worker's batch
    waits at its ledger append: the round ends with the connection error, no
    row is failed, and once the server is back and the lease has run out the
    rows are done once."""
    app = app_factory(DATABASE_URL=private_postgres.url, INTAKE_LEASE_SECONDS=LEASE)
    with app.app_context():
        upgrade()
        two_lists()
        wanted = {f"restart{n:03d}@example.org": ["nyhedsbrev", "tips"] for n in range(50)}
        queue_signups(wanted)
        errors: list[BaseException] = []

        def work() -> None:
            with app.app_context():
                try:
                    process_intake("cut-off worker")
                except BaseException as exc:  # checked below
                    errors.append(exc)

        worker = threading.Thread(target=work)
        with contextlib.suppress(OperationalError), ledger_head_held():  # cut as well
            worker.start()
            wait_for(lambda: backends_waiting_for_a_lock() == 1, 30, "the worker's batch")
            private_postgres.stop()
            worker.join(timeout=30)
        assert not worker.is_alive()
        assert [type(e) for e in errors] == [OperationalError]
        private_postgres.start()

        rows = intake_rows()
        assert len(rows) == 50
        assert {(r.attempts, r.leased_by, r.failed_at, r.last_error) for r in rows} == {
            (1, "cut-off worker", None, None)
        }
        assert count(Subscriber) == 0
        wait_past_leases()
        assert drain_intake("next worker") == 50
        assert_exactly_once(wanted)
        db.session.remove()


# --- 3. concurrent workers ------------------------------------------------------------------


def test_workers_racing_for_an_intake_with_repeated_addresses_do_each_row_once(
    app: Flask,
) -> None:
    """Six workers (threads, each its own session) drain 360 rows in batches of
    10: 120 addresses, each submitted three times, in three different orders.
    Each address is one subscriber with one mail and three `requested` events
    per list (one per submission)."""
    app.config.update(INTAKE_BATCH_SIZE=10)
    two_lists()
    wanted = {
        f"race{n:03d}@example.org": ["nyhedsbrev", "tips"] if n % 2 else ["nyhedsbrev"]
        for n in range(120)
    }
    order = random.Random(16)
    for _ in range(3):  # each time in another order
        queue_signups(dict(order.sample(list(wanted.items()), len(wanted))))
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def work(number: int) -> None:
        try:
            with app.app_context():
                barrier.wait(timeout=30)
                drain_intake(owner=f"racer {number}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a worker hung"
    assert errors == []
    assert_exactly_once(wanted, submissions=3)


def test_a_worker_whose_lease_was_taken_over_deletes_and_does_nothing(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    """Worker A claims, stalls past its lease; worker B claims the rows again. A
    then goes on: its fenced DELETE takes nothing, so it writes nothing. B does
    the rows, once."""
    two_lists()
    wanted = {f"stall{n}@example.org": ["nyhedsbrev"] for n in range(4)}
    queue_signups(wanted)
    every_row = select(SignupIntake.id).order_by(SignupIntake.id)
    slow = Lease.start("worker a", 0.2)
    with unit_of_work():
        ids = [row[0] for row in claim(INTAKE, every_row, slow)]
    assert len(ids) == 4
    time.sleep(0.3)
    fast = Lease.start("worker b", 60)
    with unit_of_work():
        assert [row[0] for row in claim(INTAKE, every_row, fast)] == ids
    assert [(t.owner, list(t.ids)) for t in fast.takeovers] == [("worker a", ids)]

    with unit_of_work():
        intake_run._process(ids, slow)  # A, late
    assert (count(Subscriber), count(ConsentEvent)) == (0, 0)
    assert [(row.leased_by, row.lease_until) for row in intake_rows()] == [
        ("worker b", fast.until)
    ] * 4

    with unit_of_work():
        intake_run._process(ids, fast)  # B
    with unit_of_work():
        intake_run._process(ids, slow)  # A once more: still nothing
    assert_exactly_once(wanted)


def test_a_takeover_by_process_intake_is_logged(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker's round that claims rows whose lease ran out says whose they were."""
    two_lists()
    wanted = {"taken@example.org": ["nyhedsbrev"]}
    queue_signups(wanted)
    dead = Lease.start("dead worker", 0.1)
    with unit_of_work():
        claim(INTAKE, select(SignupIntake.id), dead)
    time.sleep(0.2)
    with caplog.at_level(logging.WARNING, logger="newsletter.subscriptions.intake_run"):
        assert process_intake("live worker") == 1
    assert "were claimed again after dead worker's lease ran out" in caplog.text
    assert_exactly_once(wanted)


# --- 4. submitting again while a row waits ---------------------------------------------------


def test_submitting_twice_while_the_row_waits_changes_nothing_visible(
    app: Flask, client: FlaskClient, deliver: Deliver
) -> None:
    """The same signup sent twice by the API and twice by the form before the
    worker runs: the same answers, one subscriber each, one confirmation mail
    each, and, as before the intake, one `requested` event per submission and
    list. The first submission's name stays."""
    two_lists()
    api_body = {"email": "twice@example.org", "name": "First", "lists": ["nyhedsbrev", "tips"]}
    api = [
        client.post("/api/v1/subscriptions", json=api_body),
        client.post("/api/v1/subscriptions", json={**api_body, "name": "Second"}),
    ]
    form_body = {"email": "form.twice@example.org", "name": "First", "list": ["tips"]}
    form = [
        client.post("/subscribe", data=form_body, headers={"Origin": ORIGIN}),
        client.post("/subscribe", data={**form_body, "name": "Second"}, headers={"Origin": ORIGIN}),
    ]
    assert [(r.status_code, r.get_json()) for r in api] == [(202, api[0].get_json())] * 2
    assert [r.status_code for r in form] == [200, 200]
    assert form[0].get_data() == form[1].get_data()
    assert (count(SignupIntake), count(Subscriber)) == (4, 0)

    mails = deliver()
    assert sorted(parseaddr(str(m["To"]))[1] for m in mails) == [
        "form.twice@example.org",
        "twice@example.org",
    ]
    wanted = {"twice@example.org": ["nyhedsbrev", "tips"], "form.twice@example.org": ["tips"]}
    assert_exactly_once(wanted, submissions=2)
    names = dict(db.session.execute(select(Subscriber.email, Subscriber.name)).all())
    db.session.commit()
    assert names == {"twice@example.org": "First", "form.twice@example.org": "First"}


# --- 5. the answer comes before the work ----------------------------------------------------


def test_a_signup_request_stores_one_intake_row_with_the_evidence_and_nothing_else(
    app: Flask, client: FlaskClient
) -> None:
    """POST /subscribe and POST /api/v1/subscriptions send no statement touching
    anything keyed by the address; each stores one intake row with the evidence.
    The worker's `requested` events carry the request's time and that evidence."""
    policy = import_policy(
        b"---\neffective: 2024-01-01\n---\nOur policy.\n"
    ).version.id  # fmt: skip
    news, tips = two_lists()
    texts = {news.id: current_consent_text(news.id).id, tips.id: current_consent_text(tips.id).id}
    db.session.commit()
    secret_page = "https://inklusio.dk/tilmeld/Xk9fQ2pLr7TzWm4aBv8c?ref=nyhedsbrev#top"

    before = utcnow()
    with statements_sent() as seen:
        form = client.post(
            "/subscribe",
            data={
                "email": "Form@Example.ORG",
                "name": "Form Person",
                "list": ["tips", "nyhedsbrev"],
            },
            headers={"Origin": ORIGIN, "User-Agent": "Form agent", "Referer": secret_page},
            environ_base={"REMOTE_ADDR": "198.51.100.77"},
        )
        api = client.post(
            "/api/v1/subscriptions",
            json={"email": "api@example.org", "lists": ["tips"], "locale": "da"},
            headers={"User-Agent": "API agent"},
            environ_base={"REMOTE_ADDR": "2001:db8:1234:5678::1"},
        )
    after = utcnow()
    assert (form.status_code, api.status_code) == (200, 202)
    assert [s for s in seen if PERSONAL_TABLES.search(s)] == []
    assert sum("INSERT INTO signup_intake" in s for s in seen) == 2
    assert (count(Subscriber), count(Subscription), count(ConsentEvent), count(OutboxMessage)) == (
        0,
        0,
        0,
        0,
    )

    rows = intake_rows()
    stored = [
        (
            r.channel, r.email, r.email_key, r.name, r.locale, r.terms, r.policy_version_id,
            r.ip, r.user_agent, r.source_url, r.attempts, r.lease_until, r.failed_at,
        )
        for r in rows
    ]  # fmt: skip
    assert stored == [
        (
            "form", "Form@example.org", "form@example.org", "Form Person", "en",
            [[tips.id, texts[tips.id]], [news.id, texts[news.id]]], policy,
            "198.51.100.0/24", "Form agent", "https://inklusio.dk/tilmeld/…", 0, None, None,
        ),
        (
            "api", "api@example.org", "api@example.org", "", "da",
            [[tips.id, texts[tips.id]]], policy,
            "2001:db8:1234::/48", "API agent", f"{ORIGIN}/api/v1/subscriptions", 0, None, None,
        ),
    ]  # fmt: skip
    assert all(before <= r.received_at <= after for r in rows)
    assert rows[0].received_at <= rows[1].received_at

    drain_intake()
    events = db.session.scalars(
        select(ConsentEvent)
        .where(ConsentEvent.event == ConsentEventType.REQUESTED)
        .order_by(ConsentEvent.seq)
    ).all()
    by_email = {r.email: r for r in rows}
    seen_events = [
        (e.email, e.list_id, e.consent_text_id, e.channel, e.policy_version_id) for e in events
    ]
    assert sorted(seen_events) == sorted(
        [
            ("Form@example.org", tips.id, texts[tips.id], "form", policy),
            ("Form@example.org", news.id, texts[news.id], "form", policy),
            ("api@example.org", tips.id, texts[tips.id], "api", policy),
        ]
    )
    for e in events:
        row = by_email[e.email]
        assert e.occurred_at == row.received_at
        assert (e.ip, e.user_agent, e.source_url) == (row.ip, row.user_agent, row.source_url)
    db.session.commit()


@pytest.mark.parametrize(("mode", "stored"), [("full", "198.51.100.77"), ("none", None)])
def test_the_intake_row_keeps_the_ip_as_ip_logging_says(
    app: Flask, client: FlaskClient, mode: str, stored: str | None
) -> None:
    app.config["IP_LOGGING"] = mode
    two_lists()
    answer = client.post(
        "/api/v1/subscriptions",
        json={"email": "ip@example.org"},
        environ_base={"REMOTE_ADDR": "198.51.100.77"},
    )
    assert answer.status_code == 202
    assert [row.ip for row in intake_rows()] == [stored]
    drain_intake()
    assert outcome().subscribers == {"ip@example.org": 1}
    assert db.session.scalars(select(ConsentEvent.ip)).all() == [stored]
    db.session.commit()
