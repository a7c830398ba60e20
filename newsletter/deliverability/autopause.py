"""A sending campaign pauses itself when its mail hurts the sender's reputation.

The rules (figures as defined in ``compliance``), checked once at least
CAMPAIGN_PAUSE_MIN_SENDS mails of the campaign went out:

- its complaint rate (complaints per mail sent) passes 0.3 % (``LIMIT``), the
  line Gmail and Yahoo say a bulk sender must never reach; or
- its hard-bounce rate (hard bounces per mail attempted) passes
  CAMPAIGN_PAUSE_HARD_BOUNCE_RATE (default 0.05).

"Passes" is strictly over: at exactly the line the campaign goes on. Under
CAMPAIGN_PAUSE_MIN_SENDS the rates say too little and nothing pauses. A
pause stores its reason with the campaign (``pause_reason``: the rule, the
rate, the counts and the line) and is audited as ``campaign.auto_pause``.

Staff may resume a paused campaign (their resume clears the reason). The
reports that paused it do not pause it again: a rule pauses a campaign once
more only when its rate rises above the rate of that rule's last automatic
pause of the campaign (read from the audit trail). New complaints that make
things worse pause it; the same figures, or better ones as more mail goes
out, do not.

Called after a report naming a campaign is acted on, and after each batch of
campaign mail. Counting sends is skipped when the campaign's reports alone
cannot reach a line (the common case), so the check costs one indexed
count of bounce reports.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from fractions import Fraction
from typing import Any

from flask import current_app
from sqlalchemy import select

from ..extensions import db
from ..models import AuditEntry, Campaign, CampaignStatus, utcnow
from ..staff import audit
from ..transaction import transactional
from .compliance import LIMIT, Figures, report_counts, sent_counts

log = logging.getLogger(__name__)

COMPLAINT_RULE = "complaint_rate"
HARD_BOUNCE_RULE = "hard_bounce_rate"
AUDIT_ACTION = "campaign.auto_pause"
AUDIT_ACTOR = "(automatic)"


def _lines() -> tuple[float, int]:
    config = current_app.config
    return float(config["CAMPAIGN_PAUSE_HARD_BOUNCE_RATE"]), int(config["CAMPAIGN_PAUSE_MIN_SENDS"])


def _exact(line: float) -> Fraction:
    """A line as the decimal it was written as (0.003 is 3/1000, not the float
    just above it), so that a rate exactly on the line never counts as over it."""
    return Fraction(str(line))


def reasons_over_lines(figures: Figures) -> list[dict[str, Any]]:
    """The rules ``figures`` break, each as the reason a pause stores (complaints first)."""
    hard_line, min_sends = _lines()
    reasons = []
    if figures.sends >= min_sends and figures.complaints > _exact(LIMIT) * figures.sends:
        reasons.append(_reason(COMPLAINT_RULE, figures.complaints, figures.sends, LIMIT, min_sends))
    if (
        figures.attempted >= min_sends
        and figures.hard_bounces > _exact(hard_line) * figures.attempted
    ):
        reasons.append(
            _reason(HARD_BOUNCE_RULE, figures.hard_bounces, figures.attempted, hard_line, min_sends)
        )
    return reasons


def _reason(rule: str, count: int, of: int, line: float, min_sends: int) -> dict[str, Any]:
    return {
        "rule": rule,
        "rate": count / of,
        "count": count,
        "of": of,
        "line": line,
        "min_sends": min_sends,
    }


def describe(reason: dict[str, Any] | None) -> str:
    """A stored reason in plain English (the command line; the console translates)."""
    if not reason:
        return ""
    what = "complaint rate" if reason.get("rule") == COMPLAINT_RULE else "hard-bounce rate"
    of = "mails sent" if reason.get("rule") == COMPLAINT_RULE else "mails attempted"
    return (
        f"paused automatically: {what} {float(reason['rate']) * 100:.2f} % "
        f"({reason['count']} of {reason['of']} {of}) passed the "
        f"{float(reason['line']) * 100:g} % line"
    )


def _could_pass(counts: dict[str, int]) -> bool:
    """Whether the reports alone could put a campaign over a line (else sends
    need not be counted): a rate over a line needs more than line x
    CAMPAIGN_PAUSE_MIN_SENDS reports of its kind."""
    hard_line, min_sends = _lines()
    return (
        counts["complaints"] > _exact(LIMIT) * min_sends
        or counts["hard_bounces"] > _exact(hard_line) * min_sends
    )


def _paused_before(campaign_id: int) -> dict[str, float]:
    """The highest rate each rule paused this campaign at before (audit trail)."""
    details = db.session.scalars(
        select(AuditEntry.details).where(
            AuditEntry.object_type == "campaign",
            AuditEntry.object_id == str(campaign_id),
            AuditEntry.action == AUDIT_ACTION,
        )
    ).all()
    highest: dict[str, float] = {}
    for entry in details:
        reason = (entry or {}).get("reason") or {}
        rule, rate = reason.get("rule"), reason.get("rate")
        if isinstance(rule, str) and isinstance(rate, int | float):
            highest[rule] = max(highest.get(rule, 0.0), float(rate))
    return highest


@transactional
def check_campaign(campaign_id: int) -> dict[str, Any] | None:
    """Pause a sending campaign whose rates pass a line (see the module);
    returns the reason stored, or None when it goes on (or is not sending)."""
    status = db.session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
    if status != CampaignStatus.SENDING:
        return None
    counts = report_counts([campaign_id])[campaign_id]
    if not _could_pass(counts):
        return None
    figures = Figures(sends=sent_counts([campaign_id]).get(campaign_id, 0), **counts)
    before = _paused_before(campaign_id)
    reasons = [r for r in reasons_over_lines(figures) if r["rate"] > before.get(r["rule"], 0.0)]
    if not reasons:
        return None
    campaign = db.session.scalar(
        select(Campaign).where(Campaign.id == campaign_id).with_for_update()
    )
    if campaign is None or campaign.status != CampaignStatus.SENDING:
        return None  # paused, cancelled or finished meanwhile
    reason = {**reasons[0], "at": utcnow().isoformat()}
    campaign.status = CampaignStatus.PAUSED
    campaign.pause_reason = reason
    entry = audit.record(
        None,
        AUDIT_ACTION,
        "campaign",
        campaign.id,
        details={"status": {"before": "sending", "after": "paused"}, "reason": reason},
    )
    entry.actor_email = AUDIT_ACTOR
    log.warning("campaign %d %s", campaign.id, describe(reason))
    return reason


def check_campaigns(campaign_ids: Iterable[int]) -> list[int]:
    """``check_campaign`` for each (a worker's batch); returns those paused."""
    return [cid for cid in sorted(set(campaign_ids)) if check_campaign(cid) is not None]
