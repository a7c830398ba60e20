"""Leases on work rows (newsletter/lease.py), used by the outbox, campaign
deliveries and CSV imports alike: claims from concurrent workers are disjoint,
a lease that ran out can be claimed again, renew and release touch only rows the
lease still holds and say how many, error text has one bound; and the outbox
renews its lease, so a batch slower than the lease is not sent twice."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import insert, select, update
from werkzeug.test import TestResponse

from newsletter.extensions import db
from newsletter.lease import (
    ERROR_LENGTH,
    Leasable,
    Lease,
    claim,
    free,
    release,
    renew,
    settle,
)
from newsletter.models import (
    Delivery,
    MailingList,
    OutboxKind,
    OutboxMessage,
    OutboxStatus,
    Subscriber,
    utcnow,
)
from newsletter.worker.round import run_worker

from .conftest import BACKEND
from .fixtures.smtp import SMTPServer

PostForm = Callable[..., TestResponse]

ROWS = Leasable(
    OutboxMessage.id, OutboxMessage.lease_until, OutboxMessage.leased_by, OutboxMessage.last_error
)


def queued_rows(count: int) -> list[int]:
    """``count`` due outbox rows for one subscriber; their ids, committed."""
    subscriber = Subscriber(email="lease@example.org", email_key="lease@example.org")
    db.session.add(subscriber)
    db.session.flush()
    now = utcnow()
    db.session.execute(
        insert(OutboxMessage),
        [
            {
                "kind": OutboxKind.CONFIRM,
                "subscriber_id": subscriber.id,
                "payload": {},
                "next_attempt_at": now,
            }
            for _ in range(count)
        ],
    )
    ids = list(db.session.scalars(select(OutboxMessage.id).order_by(OutboxMessage.id)))
    db.session.commit()
    return ids


def take(lease: Lease, size: int) -> list[int]:
    """Claim up to ``size`` free queued rows for ``lease`` and commit; their ids."""
    now = utcnow()
    candidates = (
        select(OutboxMessage.id)
        .where(OutboxMessage.status == OutboxStatus.QUEUED, free(ROWS, now))
        .order_by(OutboxMessage.id)
        .limit(size)
    )
    ids = sorted(row_id for (row_id,) in claim(ROWS, candidates, lease))
    db.session.commit()
    return ids


def holders() -> dict[int, tuple[str | None, object]]:
    """Row id -> (leased_by, lease_until), read in a transaction that is closed again."""
    db.session.commit()
    found = {
        row_id: (owner, until)
        for row_id, owner, until in db.session.execute(
            select(OutboxMessage.id, OutboxMessage.leased_by, OutboxMessage.lease_until)
        )
    }
    db.session.commit()
    return found


def test_claims_from_two_threads_at_once_are_disjoint(app: Flask) -> None:
    """PostgreSQL: SKIP LOCKED; SQLite: BEGIN IMMEDIATE makes the second claim see
    the first one's lease."""
    ids = queued_rows(10)
    barrier = threading.Barrier(2)
    claimed: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def work(owner: str) -> None:
        try:
            with app.app_context():
                barrier.wait(timeout=10)
                claimed[owner] = take(Lease.start(owner, 60), 4)
                db.session.remove()
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"worker-{n}",)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    first, second = claimed["worker-1"], claimed["worker-2"]
    assert len(first) == len(second) == 4
    assert set(first).isdisjoint(second)
    held_by = {row_id: owner for row_id, (owner, _) in holders().items()}
    assert {held_by[i] for i in first} == {"worker-1"}
    assert {held_by[i] for i in second} == {"worker-2"}
    assert sorted(i for i in ids if held_by[i] is None) == sorted(set(ids) - {*first, *second})


@pytest.mark.postgres_only
@pytest.mark.skipif(
    BACKEND != "postgresql",
    reason="row locks held by another open transaction exist only on PostgreSQL; "
    "SQLite has a single writer, so the claim would wait rather than skip",
)
def test_a_claim_skips_rows_another_transaction_has_locked(app: Flask) -> None:
    ids = queued_rows(5)
    with db.engine.connect() as other:
        other.begin()
        other.execute(
            select(OutboxMessage.id).where(OutboxMessage.id.in_(ids[:2])).with_for_update()
        ).all()
        claimed = take(Lease.start("skipper", 60), 10)  # must not wait for the locks
        other.rollback()
    assert claimed == ids[2:]


def test_a_lease_that_ran_out_can_be_claimed_again_and_a_live_one_cannot(app: Flask) -> None:
    ids = queued_rows(3)
    crashed = Lease.start("crashed", 60)
    assert take(crashed, 10) == ids
    assert take(Lease.start("other", 60), 10) == []  # all held

    db.session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == ids[0])
        .values(lease_until=utcnow() - timedelta(seconds=1))
    )
    db.session.commit()
    taker = Lease.start("taker", 60)
    assert take(taker, 10) == [ids[0]]
    assert holders()[ids[0]] == ("taker", taker.until)


def test_renew_and_release_touch_only_rows_the_lease_still_holds_and_count_them(
    app: Flask,
) -> None:
    ids = queued_rows(4)
    stalled = Lease.start("stalled", 60)
    assert take(stalled, 10) == ids
    # Two rows were taken over after the stalled worker's lease ran out; one it settled.
    db.session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(ids[:2]))
        .values(lease_until=utcnow() - timedelta(seconds=1))
    )
    db.session.commit()
    other = Lease.start("other", 60)
    assert take(other, 10) == ids[:2]
    assert settle(ROWS, [ids[3]], status=OutboxStatus.SENT) == 1
    db.session.commit()

    token = stalled.until
    assert renew(ROWS, ids, stalled) == 1  # only ids[2] is still its own
    db.session.commit()
    assert stalled.until > token  # the token moved on with the lease
    now = holders()
    assert now[ids[2]] == ("stalled", stalled.until)
    assert {now[i] for i in ids[:2]} == {("other", other.until)}  # untouched
    assert now[ids[3]][1] is None

    assert settle(ROWS, ids, lease=stalled, status=OutboxStatus.FAILED) == 1  # fenced
    db.session.commit()
    assert release(ROWS, ids, stalled) == 0  # nothing of its own is left
    assert release(ROWS, ids, other) == 2
    db.session.commit()
    assert all(until is None for _, until in holders().values())
    statuses = dict(db.session.execute(select(OutboxMessage.id, OutboxMessage.status)).all())
    db.session.commit()
    assert [statuses[i] for i in ids] == [
        OutboxStatus.QUEUED,
        OutboxStatus.QUEUED,
        OutboxStatus.FAILED,
        OutboxStatus.SENT,
    ]


def test_a_renewal_by_the_same_owner_under_an_old_token_touches_nothing(app: Flask) -> None:
    """The token, not only the owner's name, proves a lease: a worker that claims
    the same rows again after its own lease ran out holds them under the new one."""
    ids = queued_rows(2)
    old = Lease.start("same-worker", 60)
    take(old, 10)
    db.session.execute(update(OutboxMessage).values(lease_until=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    new = Lease.start("same-worker", 60)
    assert take(new, 10) == ids
    assert renew(ROWS, ids, old) == 0
    assert release(ROWS, ids, old) == 0
    assert renew(ROWS, ids, new) == 2
    db.session.commit()


def test_error_text_is_cut_to_one_length_that_fits_every_error_column(app: Flask) -> None:
    for column in (OutboxMessage.last_error, Delivery.last_error):
        assert column.type.length >= ERROR_LENGTH
    ids = queued_rows(1)
    assert settle(ROWS, ids, error="é" * (ERROR_LENGTH * 3)) == 1
    db.session.commit()
    stored = db.session.scalar(select(OutboxMessage.last_error))
    db.session.commit()
    assert stored == "é" * ERROR_LENGTH


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll until ``condition`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def test_an_outbox_batch_slower_than_its_lease_is_not_sent_twice(
    app: Flask, default_list: MailingList, post_form: PostForm, smtp_server: SMTPServer
) -> None:
    """A batch of 16 mails at 0.25 s each outlasts a 2 s lease. A second worker that
    starts after the first one's lease would have run out finds nothing to take over:
    the first renews its lease while it sends, so each mail arrives exactly once."""
    app.config["OUTBOX_BATCH_SIZE"] = 16
    app.config["OUTBOX_LEASE_SECONDS"] = 2
    addresses = [f"slow{n:02d}@example.org" for n in range(16)]
    for address in addresses:
        assert post_form("/subscribe", {"email": address}).status_code == 200
    db.session.commit()
    smtp_server.recorder.delay = 0.25
    errors: list[BaseException] = []

    def work() -> None:
        try:
            assert run_worker(app, threading.Event(), once=True) == 0
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    def received() -> int:
        with smtp_server.recorder.lock:
            return len(smtp_server.recorder.received)

    first = threading.Thread(target=work)
    first.start()
    # Ten mails take 2.5 s: the lease taken before the first one is 2 s old by now.
    wait_for(lambda: received() >= 10, timeout=30, what="the first worker to be mid-batch")
    second = threading.Thread(target=work)
    second.start()
    for thread in (first, second):
        thread.join(timeout=60)
    smtp_server.recorder.delay = 0.0

    assert errors == []
    with smtp_server.recorder.lock:
        counts = Counter(rcpt for r in smtp_server.recorder.received for rcpt in r.rcpt_tos)
    assert sorted(counts) == addresses
    assert {a: n for a, n in counts.items() if n != 1} == {}
    db.session.commit()
    statuses = set(db.session.scalars(select(OutboxMessage.status)))
    db.session.commit()
    assert statuses == {OutboxStatus.SENT}
