"""What the worker shows while it sends: a live line on a terminal, log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from sqlalchemy import select

from ..extensions import db
from ..models.campaigns import Campaign, CampaignStatus
from .delivery import DeliveryBatch
from .service import CampaignProgress, campaign_progress

log = logging.getLogger(__name__)

FINISHED = (CampaignStatus.DONE, CampaignStatus.CANCELLED)
BAR_WIDTH = 30


class ProgressReporter:
    """Called after each campaign batch; reports at most every ``interval`` seconds.

    A terminal gets one line redrawn with ``\\r`` (every ``interval``), anything
    else a log line (every ten intervals). The moment a campaign finishes is
    always reported, so a bar does not stop short of its end.
    """

    def __init__(self, stream: TextIO | None = None, interval: float = 1.0) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.interval = interval
        self.tty = self.stream.isatty()
        self._last: float | None = None

    def __call__(self, batch: DeliveryBatch) -> None:
        """Report the campaigns this batch touched (throttled)."""
        now = time.monotonic()
        pause = self.interval if self.tty else 10 * self.interval
        due = self._last is None or now - self._last >= pause
        for campaign_id in sorted(batch.campaigns):
            # A primary-key lookup per batch; the counts below only when reporting.
            status = db.session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
            finished = status in FINISHED
            if not (due or finished):
                continue
            progress = campaign_progress(campaign_id)
            if self.tty:
                self._draw(progress, finished)
            else:
                self._log(progress)
        if due:
            self._last = now

    def _draw(self, progress: CampaignProgress, finished: bool) -> None:
        done = progress.total - progress.queued
        filled = int(BAR_WIDTH * done / progress.total) if progress.total else BAR_WIDTH
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        eta = "-" if progress.eta_seconds is None else f"{progress.eta_seconds:.0f}s"
        self.stream.write(
            f"\rcampaign {progress.id} [{bar}] {done}/{progress.total} "
            f"{progress.rate:.0f}/s ETA {eta}   " + ("\n" if finished else "")
        )
        self.stream.flush()

    def _log(self, progress: CampaignProgress) -> None:
        log.info(
            "campaign %d (%s): %d/%d done (sent %d, failed %d, skipped %d), %.0f/s",
            progress.id,
            progress.status,
            progress.total - progress.queued,
            progress.total,
            progress.sent,
            progress.failed,
            progress.skipped,
            progress.rate,
        )
