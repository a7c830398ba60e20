"""Fencing and visible takeovers (newsletter/fence.py, lease.claim's takeovers).

A worker records what it sent chunk by chunk in a statement fenced by its lease
token, and stops at the first chunk that is no longer its own: its lease is
expired under it on a slow SMTP server (as a partition or a stall would) and a
second worker claims the rows. Each recipient then gets at most one mail more
than the bound (one chunk), the first worker sends at most one chunk after the
takeover and says so, and the campaign records the takeover, which `campaign
status --json` and the console show. The outbox follows the same rule.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import func, select, update

from newsletter.campaigns.delivery import send_deliveries
from newsletter.campaigns.outcomes import DeliveryBatch
from newsletter.extensions import db
from newsletter.lease import Lease, claim, free, record
from newsletter.models import (
    Delivery,
    DeliveryStatus,
    MailingList,
    OutboxMessage,
    OutboxStatus,
    Role,
    utcnow,
)
from newsletter.worker.outbox import OUTBOX, BatchResult, process_batch

from .conftest import BACKEND
from .fixtures.smtp import SMTPServer
from .fixtures.staff import StaffClient
from .test_lease import queued_rows
from .test_sending_guarantees import (
    add_subscribers,
    mails_per_recipient,
    received_count,
    started_campaign,
    wait_for,
)

PostForm = Callable[..., Any]


class Background:
    """A worker function run in its own thread, in its own app context."""

    def __init__(self, app: Flask, work: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                with app.app_context():
                    self.result = work()
                    db.session.remove()
            except BaseException as exc:  # reported by join
                self.error = exc

        self.thread = threading.Thread(target=run)
        self.thread.start()

    def join(self) -> Any:
        """Wait for the worker; its return value (its exception is raised)."""
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the worker did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def expire_lease(model: Any, owner: str) -> None:
    """Make the lease of ``owner``'s queued rows run out now, as a stall would."""
    db.session.commit()
    db.session.execute(
        update(model)
        .where(model.leased_by == owner, model.status == "queued", model.lease_until.is_not(None))
        .values(lease_until=utcnow() - timedelta(seconds=1))
    )
    db.session.commit()


def count_sent(model: Any, status: Any) -> int:
    """Rows marked sent, read in a transaction that is closed again."""
    db.session.commit()
    sent = db.session.scalar(select(func.count()).select_from(model).where(model.status == status))
    db.session.commit()
    return int(sent or 0)


def fence_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The fence's warnings so far."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "newsletter.fence" and r.levelno == logging.WARNING
    ]


def test_a_worker_whose_lease_was_taken_over_stops_at_the_next_chunk_and_says_so(
    app: Flask,
    default_list: MailingList,
    smtp_server: SMTPServer,
    runner: FlaskCliRunner,
    staff_client: Callable[..., StaffClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Batch 100, chunk 10, a slow server. Mid-batch the first worker's lease is
    expired under it and a second worker claims the rows and sends them. The first
    sends at most one chunk after that, logs a warning naming the campaign, and no
    recipient gets more than two mails, at most one chunk of them twice. The
    campaign counts the takeover: status --json, the text status and the console."""
    chunk, total = 10, 100
    app.config.update(
        DELIVERY_BATCH_SIZE=total, DELIVERY_FENCE_CHUNK=chunk, DELIVERY_FENCE_SECONDS=60
    )
    addresses = add_subscribers(default_list, total)
    campaign_id = started_campaign()
    smtp_server.recorder.delay = 0.05
    caplog.set_level(logging.WARNING)

    first = Background(app, lambda: send_deliveries(app, "first-worker"))
    wait_for(lambda: received_count(smtp_server) >= 25, 30, "the first worker mid-batch")
    at_takeover = received_count(smtp_server)
    expire_lease(Delivery, "first-worker")
    smtp_server.recorder.delay = 0.005
    second: DeliveryBatch = send_deliveries(app, "second-worker")
    lost: DeliveryBatch = first.join()

    assert lost.lost
    assert lost.sent - at_takeover <= chunk  # at most one chunk after the takeover
    assert 0 < lost.unrecorded <= chunk
    warnings = fence_warnings(caplog)
    assert len(warnings) == 1
    assert f"campaign {campaign_id}, deliveries " in warnings[0]
    assert f"{lost.unrecorded} sent but not recorded" in warnings[0]
    counts = mails_per_recipient(smtp_server)
    assert sorted(counts) == addresses  # nobody missed
    twice = [a for a, n in counts.items() if n > 1]
    assert max(counts.values()) <= 2
    assert len(twice) == lost.unrecorded <= chunk
    assert second.sent == total - (lost.sent - lost.unrecorded)
    assert count_sent(Delivery, DeliveryStatus.SENT) == total

    code_output = runner.invoke(args=["campaign", "status", str(campaign_id), "--json"])
    assert code_output.exit_code == 0, code_output.output
    status = json.loads(code_output.output)
    assert (status["status"], status["sent"]) == ("done", total)
    assert status["taken_over"] == second.sent  # every row it sent, it took over
    assert status["possibly_duplicated"] == chunk  # one lost lease: one chunk at most
    assert status["possibly_duplicated"] >= len(twice)
    text = runner.invoke(args=["campaign", "status", str(campaign_id)]).output
    assert f"{second.sent} taken over from a lost worker, up to {chunk} possibly sent twice" in (
        text
    )
    db.session.commit()
    viewer = staff_client(Role.VIEWER)
    page = viewer.get(f"/admin/campaigns/{campaign_id}").get_data(as_text=True)
    assert f'data-field="taken_over">{second.sent}<' in page
    assert f'data-field="possibly_duplicated">{chunk}<' in page
    data = viewer.get(f"/admin/campaigns/{campaign_id}/progress.json").json
    assert data is not None
    assert (data["taken_over"], data["possibly_duplicated"]) == (second.sent, chunk)
    taken = [r.getMessage() for r in caplog.records if r.name == "newsletter.campaigns.claim"]
    assert len(taken) == 1
    assert f"campaign {campaign_id}: took over {second.sent} deliveries" in taken[0]
    assert "owner first-worker" in taken[0]


@pytest.mark.postgres_only
@pytest.mark.skipif(
    BACKEND != "postgresql",
    reason="a row lock held by another transaction, and lock_timeout, are PostgreSQL's",
)
def test_a_record_that_times_out_stops_the_batch_and_says_so(
    app: Flask,
    app_factory: Callable[..., Flask],
    default_list: MailingList,
    smtp_server: SMTPServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Another transaction locks the worker's rows mid-batch (as a stuck session
    would), so its next record waits for DATABASE_LOCK_TIMEOUT (1 s) and fails: the
    worker sends nothing more, and its warning counts the chunk it could not record."""
    chunk = 10
    worker_app = app_factory(
        DATABASE_LOCK_TIMEOUT=1,
        DELIVERY_BATCH_SIZE=40,
        DELIVERY_FENCE_CHUNK=chunk,
        DELIVERY_FENCE_SECONDS=60,
    )
    add_subscribers(default_list, 40)
    campaign_id = started_campaign()
    smtp_server.recorder.delay = 0.05
    caplog.set_level(logging.WARNING)

    worker = Background(worker_app, lambda: send_deliveries(worker_app, "locked-out"))
    wait_for(lambda: received_count(smtp_server) >= 15, 30, "the second chunk")
    with db.engine.connect() as other:
        other.begin()
        other.execute(
            select(Delivery.id).where(Delivery.status == DeliveryStatus.QUEUED).with_for_update()
        ).all()
        batch: DeliveryBatch = worker.join()
        other.rollback()

    assert (batch.lost, batch.sent, batch.unrecorded) == (True, 2 * chunk, chunk)
    assert received_count(smtp_server) == 2 * chunk
    assert count_sent(Delivery, DeliveryStatus.SENT) == chunk
    (warning,) = fence_warnings(caplog)
    assert f"campaign {campaign_id}, deliveries " in warning
    assert "recording failed: OperationalError" in warning
    assert f"{chunk} sent but not recorded, {40 - 2 * chunk} not sent" in warning


def test_sent_rows_are_marked_chunk_by_chunk_while_the_batch_is_still_sending(
    app: Flask, default_list: MailingList, smtp_server: SMTPServer
) -> None:
    """Batch 60, chunk 10, a slow server: once 35 mails have arrived, 30 rows are
    already `sent` in the database (three chunks), while the batch goes on."""
    app.config.update(DELIVERY_BATCH_SIZE=60, DELIVERY_FENCE_CHUNK=10, DELIVERY_FENCE_SECONDS=60)
    add_subscribers(default_list, 60)
    started_campaign()
    smtp_server.recorder.delay = 0.05

    worker = Background(app, lambda: send_deliveries(app, "chunky"))
    wait_for(lambda: received_count(smtp_server) >= 35, 30, "35 mails")
    marked = count_sent(Delivery, DeliveryStatus.SENT)
    running = worker.thread.is_alive()
    smtp_server.recorder.delay = 0.0
    batch: DeliveryBatch = worker.join()

    assert running
    assert marked % 10 == 0
    assert 30 <= marked < 60
    assert (batch.sent, batch.lost, count_sent(Delivery, DeliveryStatus.SENT)) == (60, False, 60)


def test_a_second_with_something_unrecorded_is_a_chunk_too(
    app: Flask, default_list: MailingList, smtp_server: SMTPServer
) -> None:
    """Chunk 1000 but 0.2 s: on a server taking 0.1 s a mail, rows are marked
    about every other mail, long before a thousand."""
    app.config.update(DELIVERY_BATCH_SIZE=20, DELIVERY_FENCE_CHUNK=1000, DELIVERY_FENCE_SECONDS=0.2)
    add_subscribers(default_list, 20)
    started_campaign()
    smtp_server.recorder.delay = 0.1

    worker = Background(app, lambda: send_deliveries(app, "timely"))
    wait_for(lambda: received_count(smtp_server) >= 10, 30, "ten mails")
    marked = count_sent(Delivery, DeliveryStatus.SENT)
    smtp_server.recorder.delay = 0.0
    worker.join()
    assert marked >= 6


def test_an_outbox_worker_whose_rows_were_taken_over_stops_at_once(
    app: Flask,
    default_list: MailingList,
    post_form: PostForm,
    smtp_server: SMTPServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """20 confirmations on a slow server. The first outbox worker's lease is expired
    under it and a second worker takes the rows over (and logs it): the first stops
    before its next mail (the outbox records each mail at once), warns, and at most
    one confirmation arrives twice."""
    app.config["OUTBOX_BATCH_SIZE"] = 20
    addresses = [f"confirm{n:02d}@example.org" for n in range(20)]
    for address in addresses:
        assert post_form("/subscribe", {"email": address}).status_code == 200
    db.session.commit()
    smtp_server.recorder.delay = 0.1
    caplog.set_level(logging.WARNING)

    first = Background(app, lambda: process_batch(app, "first-outbox"))
    wait_for(lambda: received_count(smtp_server) >= 5, 30, "the first confirmations")
    at_takeover = received_count(smtp_server)
    expire_lease(OutboxMessage, "first-outbox")
    smtp_server.recorder.delay = 0.0
    second: BatchResult = process_batch(app, "second-outbox")
    lost: BatchResult = first.join()

    assert lost.sent - at_takeover <= 1
    counts = mails_per_recipient(smtp_server)
    assert sorted(counts) == addresses
    assert sum(n - 1 for n in counts.values()) <= 1
    assert lost.sent + second.sent == sum(counts.values())
    warnings = fence_warnings(caplog)
    assert len(warnings) == 1
    assert warnings[0].startswith("outbox rows ")
    assert any(
        r.name == "newsletter.worker.outbox" and "took over" in r.getMessage()
        for r in caplog.records
    )
    assert count_sent(OutboxMessage, OutboxStatus.SENT) == 20


def test_a_claim_reports_the_leases_it_took_over_and_record_is_fenced(app: Flask) -> None:
    """Rows whose lease ran out come back from the claim as a takeover of that lease;
    free rows do not. ``record`` marks and extends only rows the lease still holds."""
    ids = queued_rows(4)
    lost = Lease.start("lost", 60)
    candidates = select(OutboxMessage.id).where(free(OUTBOX, utcnow())).order_by(OutboxMessage.id)
    assert [row for (row,) in claim(OUTBOX, candidates.limit(3), lost)] == ids[:3]
    db.session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(ids[:3]))
        .values(lease_until=utcnow() - timedelta(seconds=1))
    )
    db.session.commit()
    expired = db.session.scalar(select(OutboxMessage.lease_until).where(OutboxMessage.id == ids[0]))
    db.session.commit()

    taker = Lease.start("taker", 60)
    now = utcnow()
    candidates = select(OutboxMessage.id).where(free(OUTBOX, now)).order_by(OutboxMessage.id)
    assert sorted(row for (row,) in claim(OUTBOX, candidates, taker)) == ids
    db.session.commit()
    assert len(taker.takeovers) == 1
    (takeover,) = taker.takeovers
    assert (takeover.owner, takeover.ids) == ("lost", tuple(ids[:3]))
    assert takeover.until == expired

    sent = {"status": OutboxStatus.SENT}
    assert record(OUTBOX, ids[:1], lost, ids[1:], **sent) == set()  # no longer its own
    token = taker.until
    assert record(OUTBOX, ids[:2], taker, ids[2:], **sent) == set(ids)
    db.session.commit()
    assert taker.until > token
    rows = db.session.execute(
        select(OutboxMessage.status, OutboxMessage.lease_until).order_by(OutboxMessage.id)
    ).all()
    db.session.commit()
    assert [tuple(r) for r in rows] == [
        (OutboxStatus.SENT, None),
        (OutboxStatus.SENT, None),
        (OutboxStatus.QUEUED, taker.until),
        (OutboxStatus.QUEUED, taker.until),
    ]
