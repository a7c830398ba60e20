"""A worker round and the loop that repeats it until stopped."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from flask import Flask

from ..campaigns.delivery import send_deliveries
from ..campaigns.outcomes import DeliveryBatch
from ..campaigns.service import start_due_campaigns
from ..deliverability.autopause import check_campaigns
from ..deliverability.fetch import fetch_due
from ..extensions import db
from ..imports.run import run_next_import
from ..lease import worker_id
from ..privacy.retention import run_due_retention
from ..subscriptions.intake_run import process_intake
from .intake import start_intake_loop
from .outbox import process_batch
from .sealing import seal_step, start_seal_loop

log = logging.getLogger(__name__)

CampaignCallback = Callable[[DeliveryBatch], Any]


def work_once(
    app: Flask,
    owner: str,
    on_campaign_batch: CampaignCallback | None = None,
    with_intake: bool = True,
) -> int:
    """One round: a batch of signups from the intake (unless the intake loop
    runs beside, see worker/intake.py), an outbox batch, due scheduled
    campaigns, a campaign batch, retention when due and at most one CSV import.
    When the intake loop and the seal loop do not run beside (``worker
    --once``), the round also seals whatever ledger events wait, right after
    the intake: events of this round's later steps are sealed by the next
    round, which ``--once`` always runs.

    Signups and transactional mail go first: a confirmation should not wait
    behind a 100,000-recipient newsletter, and the signups of this round put
    their confirmation mails in the outbox for the outbox batch right after.
    One import a round keeps mail flowing; its confirmation mails are in the
    outbox when it commits, for the next round. Returns how many rows were
    handled (retention is not counted as work).
    """
    handled = process_intake(owner) if with_intake else 0
    if with_intake:  # not counted as work: --once stops when only sealing is left
        seal_step(always=True)  # before the outbox batch, which sends a witness mail it queues
    handled += process_batch(app, owner).handled
    handled += start_due_campaigns()
    batch = send_deliveries(app, owner)
    check_campaigns(batch.campaigns)  # a batch's refusals may pass a pause line
    if on_campaign_batch is not None and batch.handled:
        on_campaign_batch(batch)
    run_due_retention(app)  # once a day across all workers
    fetch_due(app)  # the bounce mailbox, every BOUNCE_FETCH_INTERVAL across all workers
    return handled + batch.handled + run_next_import()


def run_worker(
    app: Flask,
    stop: threading.Event,
    poll_interval: float = 1.0,
    once: bool = False,
    on_campaign_batch: CampaignCallback | None = None,
) -> int:
    """Work until ``stop`` is set (or nothing is due, with ``once``).

    A continuous worker takes signups in its own thread (worker/intake.py),
    so that they wait for no batch of mail; with ``once`` the rounds do it.
    A round that raises (database unreachable, say) is logged and tried again
    after ``poll_interval``; with ``once`` the worker stops there instead of
    spinning. Returns the number of rounds that failed (the intake loop's
    included), so ``worker --once`` can exit non-zero and cron notices.
    """
    owner = worker_id()
    intake = None if once else start_intake_loop(app, stop)
    sealer = None if once else start_seal_loop(app, stop)
    failures = 0
    while not stop.is_set():
        with app.app_context():
            try:
                handled: int | None = work_once(
                    app, owner, on_campaign_batch, with_intake=intake is None
                )
            except Exception:
                db.session.rollback()
                log.exception("worker: round failed; will try again")
                failures += 1
                handled = None
            finally:
                db.session.remove()
        if once and not handled:
            return failures
        if handled:
            continue
        if intake is None:
            stop.wait(poll_interval)
        elif intake.did_work.wait(poll_interval):  # set on stop too
            intake.did_work.clear()
    if intake is not None:
        intake.join()
        failures += intake.failures
    if sealer is not None:
        sealer.join()
        failures += sealer.failures
    return failures
