"""Campaign progress: counts, pace and time left, and what the worker shows while it
sends (a live line on a terminal, log lines otherwise)."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, TextIO

from sqlalchemy import func, select

from ..extensions import db
from ..models import utcnow
from ..models.campaigns import Campaign, CampaignStatus, Delivery, DeliveryStatus
from .outcomes import DeliveryBatch

log = logging.getLogger(__name__)

FINISHED = (CampaignStatus.DONE, CampaignStatus.CANCELLED)
BAR_WIDTH = 30


@dataclass(frozen=True)
class CampaignProgress:
    """Counts and pace for one campaign."""

    id: int
    status: str
    total: int
    queued: int
    sent: int
    failed: int
    skipped: int
    cancelled: int
    rate: float  # messages per second since the start
    eta_seconds: float | None
    # Deliveries claimed after another worker's lease ran out, and the upper
    # bound of those that worker may have sent unrecorded (campaigns/claim.py).
    taken_over: int = 0
    possibly_duplicated: int = 0
    # Why the campaign paused itself (deliverability/autopause.py), if it did.
    pause_reason: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return asdict(self)


def campaign_progress(campaign_id: int) -> CampaignProgress:
    """Counts by delivery status, the average rate so far, the time left, and the
    takeovers the campaign recorded."""
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None:
        raise LookupError(f"no campaign {campaign_id}")
    counts = dict(
        db.session.execute(
            select(Delivery.status, func.count())
            .where(Delivery.campaign_id == campaign_id)
            .group_by(Delivery.status)
        ).all()
    )
    sent = counts.get(DeliveryStatus.SENT, 0)
    queued = counts.get(DeliveryStatus.QUEUED, 0)
    rate = 0.0
    if campaign.started_at and sent:
        end = campaign.finished_at or utcnow()
        elapsed = max((end - campaign.started_at).total_seconds(), 1e-3)
        rate = sent / elapsed
    eta = queued / rate if rate and queued else (0.0 if not queued else None)
    return CampaignProgress(
        id=campaign.id,
        status=str(campaign.status),
        total=sum(counts.values()),
        queued=queued,
        sent=sent,
        failed=counts.get(DeliveryStatus.FAILED, 0),
        skipped=counts.get(DeliveryStatus.SKIPPED, 0),
        cancelled=counts.get(DeliveryStatus.CANCELLED, 0),
        rate=round(rate, 1),
        eta_seconds=round(eta, 1) if eta is not None else None,
        taken_over=campaign.taken_over,
        possibly_duplicated=campaign.possibly_duplicated,
        pause_reason=campaign.pause_reason,
    )


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
