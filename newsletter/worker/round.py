"""A worker round and the loop that repeats it until stopped."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Flask

from ..campaigns.delivery import send_deliveries
from ..campaigns.outcomes import DeliveryBatch
from ..campaigns.service import start_due_campaigns
from ..extensions import db
from ..imports.run import run_next_import
from ..lease import worker_id
from ..privacy.retention import run_due_retention
from ..subscriptions.intake import arrived, intake_due
from ..subscriptions.intake_run import process_intake
from .outbox import process_batch

log = logging.getLogger(__name__)

CampaignCallback = Callable[[DeliveryBatch], Any]


def work_once(app: Flask, owner: str, on_campaign_batch: CampaignCallback | None = None) -> int:
    """One round: a batch of signups from the intake, an outbox batch, due
    scheduled campaigns, a campaign batch, retention when due, and at most one
    CSV import.

    Signups and transactional mail go first: a confirmation should not wait
    behind a 100,000-recipient newsletter, and the signups of this round put
    their confirmation mails in the outbox for the outbox batch right after.
    One import a round keeps mail flowing; its confirmation mails are in the
    outbox when it commits, for the next round. Returns how many rows were
    handled (retention is not counted as work).
    """
    handled = process_intake(owner)
    handled += process_batch(app, owner).handled
    handled += start_due_campaigns()
    batch = send_deliveries(app, owner)
    if on_campaign_batch is not None and batch.handled:
        on_campaign_batch(batch)
    run_due_retention(app)  # once a day across all workers
    return handled + batch.handled + run_next_import()


def run_worker(
    app: Flask,
    stop: threading.Event,
    poll_interval: float = 1.0,
    once: bool = False,
    on_campaign_batch: CampaignCallback | None = None,
) -> int:
    """Work until ``stop`` is set (or nothing is due, with ``once``).

    A round that raises (database unreachable, say) is logged and tried again
    after ``poll_interval``; with ``once`` the worker stops there instead of
    spinning. Returns the number of rounds that failed, so ``worker --once``
    can exit non-zero and cron notices.
    """
    owner = worker_id()
    failures = 0
    while not stop.is_set():
        with app.app_context():
            try:
                handled: int | None = work_once(app, owner, on_campaign_batch)
            except Exception:
                db.session.rollback()
                log.exception("worker: round failed; will try again")
                failures += 1
                handled = None
            finally:
                db.session.remove()
        if once and not handled:
            return failures
        if not handled:
            _idle(app, stop, poll_interval)
    return failures


def _idle(app: Flask, stop: threading.Event, poll_interval: float) -> None:
    """Wait ``poll_interval`` seconds, less when a signup arrives meanwhile.

    A signup in this process sets ``intake.arrived``; on PostgreSQL the intake
    is also looked at every INTAKE_POLL_SECONDS (one indexed read), so a
    signup taken by another process is picked up as promptly. Not LISTEN/NOTIFY:
    a transaction that notifies holds a database-wide lock through its commit,
    which would make every signup's commit wait for the one before it
    (docs/architecture.md, "Signup intake"). On SQLite a read would take the
    write lock (BEGIN IMMEDIATE), so only the signal and the interval apply.
    """
    deadline = time.monotonic() + poll_interval
    step = float(app.config["INTAKE_POLL_SECONDS"])
    look = app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql")
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        if arrived.wait(min(step, left)):
            arrived.clear()
            return
        if look and _intake_due(app):
            return


def _intake_due(app: Flask) -> bool:
    """Whether an intake row is waiting (False when the database cannot say)."""
    with app.app_context():
        try:
            return intake_due()
        except Exception:
            db.session.rollback()
            return False
        finally:
            db.session.remove()
