"""What the worker shows while it sends: a live line on a terminal, log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from .delivery import DeliveryBatch
from .service import campaign_progress

log = logging.getLogger(__name__)


class ProgressReporter:
    """Called after each campaign batch; reports at most every ``interval`` seconds."""

    def __init__(self, stream: TextIO | None = None, interval: float = 1.0) -> None:
        self.stream = stream or sys.stdout
        self.interval = interval
        self.tty = self.stream.isatty()
        self._last = 0.0

    def __call__(self, batch: DeliveryBatch) -> None:
        """Report the campaigns this batch touched (throttled)."""
        now = time.monotonic()
        if now - self._last < (self.interval if self.tty else 10 * self.interval):
            return
        self._last = now
        for campaign_id in sorted(batch.campaigns):
            progress = campaign_progress(campaign_id)
            done = progress.total - progress.queued
            if self.tty:
                width = 30
                filled = int(width * done / progress.total) if progress.total else width
                bar = "#" * filled + "-" * (width - filled)
                eta = "-" if progress.eta_seconds is None else f"{progress.eta_seconds:.0f}s"
                self.stream.write(
                    f"\rcampaign {campaign_id} [{bar}] {done}/{progress.total} "
                    f"{progress.rate:.0f}/s ETA {eta}   "
                )
                self.stream.flush()
            else:
                log.info(
                    "campaign %d: %d/%d done (sent %d, failed %d, skipped %d), %.0f/s",
                    campaign_id,
                    done,
                    progress.total,
                    progress.sent,
                    progress.failed,
                    progress.skipped,
                    progress.rate,
                )
