"""Real ``newsletter worker`` processes seal the ledger in time, and together.

- Events written while a worker runs (LEDGER_SEAL_INTERVAL=2) are under a
  signed checkpoint within the interval, also while the worker's main loop is
  busy in a slow outbox batch (the SMTP server takes seconds per mail): the
  seal loop is a thread of its own. The delay is measured from the commit of
  each event to the first poll (every 20 ms) that finds the stored tree size
  covering it, so it includes the poll's own granularity.
- ``worker --once`` seals what waits before it stops.
- Two workers sealing at once (PostgreSQL: the scale-out set-up) keep one
  consistent tree: every checkpoint extends the one before and
  ``ledger verify`` passes.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import func, select

from newsletter.extensions import db
from newsletter.ledger import Evidence, append_event, verify_ledger
from newsletter.models import (
    Channel,
    LedgerCheckpoint,
    LedgerHead,
    LedgerTree,
    MailingList,
    OutboxKind,
    OutboxMessage,
    OutboxStatus,
    Subscriber,
)

from .fixtures.smtp import SMTPServer
from .test_sending_guarantees import (  # noqa: F401 (start_worker is a fixture)
    StartWorker,
    WorkerProcess,
    postgres_only,
    received_count,
    start_worker,
    wait_for,
)

INTERVAL = 2.0
# A seal is due once the last one is half an interval old, and the seal loop
# looks at least once a second (worker/sealing.py), so an event waits at most
# one interval. The slack covers one seal's own time and this test's polling
# on a busy machine: the assertion is interval + 1 s.
SLACK = 1.0
POLL = 0.02


def sealed_size() -> int:
    """The stored tree's size, read in a transaction of its own."""
    db.session.commit()
    size = db.session.scalar(select(LedgerTree.size).where(LedgerTree.id == 1)) or 0
    db.session.commit()
    return int(size)


def head() -> int:
    """Events appended so far (committed)."""
    db.session.commit()
    seq = db.session.scalar(select(LedgerHead.seq).where(LedgerHead.id == 1)) or 0
    db.session.commit()
    return int(seq)


@pytest.fixture
def write_event(default_list: MailingList) -> Callable[[], int]:
    """Append one ledger event and commit; returns its seq."""
    subscriber = Subscriber(email="sealed@example.org", email_key="sealed@example.org")
    db.session.add(subscriber)
    db.session.commit()

    def write() -> int:
        event = append_event(
            event="requested",
            channel=Channel.API,
            subscriber=subscriber,
            evidence=Evidence(),
            list_id=default_list.id,
        )
        seq = int(event.seq)
        db.session.commit()
        return seq

    return write


def seal_delays(write_event: Callable[[], int], events: int, spacing: float) -> list[float]:
    """Write ``events`` events ``spacing`` seconds apart while polling the tree
    size; return each event's delay from commit to being found sealed."""
    written: dict[int, float] = {}  # seq -> when committed (monotonic)
    delays: dict[int, float] = {}
    next_write = time.monotonic()
    deadline = next_write + events * spacing + 4 * (INTERVAL + SLACK)
    while len(delays) < events:
        now = time.monotonic()
        assert now < deadline, f"sealed {len(delays)} of {events} events in time"
        if len(written) < events and now >= next_write:
            seq = write_event()
            written[seq] = time.monotonic()
            next_write += spacing
        size = sealed_size()
        seen = time.monotonic()
        for seq, at in written.items():
            if seq <= size and seq not in delays:
                delays[seq] = seen - at
        time.sleep(POLL)
    return [delays[seq] for seq in sorted(delays)]


def stop(worker: WorkerProcess) -> None:
    """SIGTERM the worker and require a clean exit."""
    worker.popen.send_signal(signal.SIGTERM)
    worker.finish(timeout=60)


def test_events_are_sealed_within_the_interval_by_a_running_worker(
    app: Flask,
    write_event: Callable[[], int],
    start_worker: StartWorker,  # noqa: F811
) -> None:
    write_event()  # one waiting before the worker starts
    worker = start_worker("--poll", "0.2", LEDGER_SEAL_INTERVAL=INTERVAL)
    wait_for(lambda: sealed_size() == 1, 30, "the worker's first seal")
    delays = seal_delays(write_event, events=25, spacing=0.37)
    print(f"\nseal delay (idle worker), s: max {max(delays):.2f}, mean {mean(delays):.2f}")
    assert max(delays) <= INTERVAL + SLACK, delays
    stop(worker)
    assert verify_ledger().ok


def test_events_are_sealed_in_time_while_the_main_loop_sends_slowly(
    app: Flask,
    write_event: Callable[[], int],
    start_worker: StartWorker,  # noqa: F811
    smtp_server: SMTPServer,
) -> None:
    readers = [
        Subscriber(email=f"r{n}@example.org", email_key=f"r{n}@example.org") for n in range(3)
    ]
    db.session.add_all(readers)
    db.session.flush()
    db.session.add_all(
        OutboxMessage(kind=OutboxKind.DATA_EXPORT, subscriber_id=reader.id) for reader in readers
    )
    db.session.commit()
    smtp_server.recorder.delay = 4.0  # each mail takes 4 s: the batch takes 12 s
    worker = start_worker("--poll", "0.2", LEDGER_SEAL_INTERVAL=INTERVAL, MAIL_TIMEOUT=20)
    # The main loop is inside its outbox batch once the server has a connection.
    wait_for(lambda: smtp_server.recorder.connections >= 1, 30, "the outbox batch to start")
    delays = seal_delays(write_event, events=12, spacing=0.5)
    assert received_count(smtp_server) < 3, "the batch ended before the events were sealed"
    print(f"\nseal delay (main loop in a 12 s batch), s: max {max(delays):.2f}")
    assert max(delays) <= INTERVAL + SLACK, delays
    wait_for(lambda: received_count(smtp_server) == 3, 60, "the slow batch to finish")
    stop(worker)
    db.session.commit()
    sent = db.session.scalar(select(func.count()).where(OutboxMessage.status == OutboxStatus.SENT))
    assert sent == 3
    assert verify_ledger().ok


def test_worker_once_seals_what_waits(
    app: Flask,
    write_event: Callable[[], int],
    start_worker: StartWorker,  # noqa: F811
) -> None:
    for _ in range(5):
        write_event()
    assert sealed_size() == 0
    start_worker("--once", LEDGER_SEAL_INTERVAL=600).finish()
    assert sealed_size() == head() == 5
    report = verify_ledger()
    assert report.ok, report.problems
    assert (report.sealed, report.waiting) == (5, 0)


@postgres_only
def test_two_workers_sealing_at_once_keep_one_consistent_tree(
    app: Flask,
    write_event: Callable[[], int],
    start_worker: StartWorker,  # noqa: F811
) -> None:
    # Half a second: each worker looks four times a second, so they contend.
    write_event()
    workers = [start_worker("--poll", "0.2", LEDGER_SEAL_INTERVAL=0.5) for _ in range(2)]
    wait_for(lambda: sealed_size() == 1, 30, "the first seal")
    time.sleep(2)  # both workers up
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        write_event()
        time.sleep(0.03)
    written = head()
    wait_for(lambda: sealed_size() == written, 30, "every event sealed")
    for worker in workers:
        stop(worker)
        assert "round failed" not in worker.output(), worker.output()
    db.session.commit()
    sizes = db.session.scalars(select(LedgerCheckpoint.size).order_by(LedgerCheckpoint.id)).all()
    assert list(sizes) == sorted(set(sizes)), "checkpoints are signed in growing size, once each"
    assert len(sizes) > 3
    report = verify_ledger()
    assert report.ok, report.problems
    assert report.checkpoints == len(sizes)
    assert (report.sealed, report.waiting) == (written, 0)


def mean(values: list[float]) -> float:
    """The arithmetic mean."""
    return sum(values) / len(values)
