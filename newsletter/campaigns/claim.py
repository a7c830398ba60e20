"""Claiming campaign deliveries, and finishing campaigns with nothing left queued.

A claim leases rows with the shared lease helper (newsletter/lease.py: SKIP
LOCKED on PostgreSQL, SQLite's single writer) and commits, so no transaction
stays open while the batch is sent. A worker that dies leaves its rows leased;
once the lease has run out another worker claims them again. Nothing is ever
lost. The sender records, renews and releases its batch with the same helper,
fenced (newsletter/fence.py).

A claim that takes rows whose lease ran out logs it and adds to the campaign's
``taken_over`` (those rows) and ``possibly_duplicated``: per lost lease, the
rows taken over or DELIVERY_FENCE_CHUNK, whichever is smaller. A worker records
what it sent at least every chunk and stops at the first record that fails, so
of one lease at most one chunk can have been sent and not recorded, and only
rows still queued under that lease can be among them. It is an upper bound: a
worker killed between batches, or one whose lease ran out while it waited on
a slow server, sent none of them. It assumes every worker fences with the same
chunk (a worker of a release before fencing recorded per batch).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, NamedTuple

from flask import current_app
from sqlalchemy import exists, select, update

from ..extensions import db
from ..lease import Leasable, Lease, Takeover, claim, free
from ..models import utcnow
from ..models.campaigns import Campaign, CampaignStatus, Delivery, DeliveryStatus

# Where each worker's next claim in a campaign starts (by delivery id). Only a
# shortcut past the rows it already handled, never coordination: every claim
# still locks its rows in the database, and a short claim starts over from the
# lowest id, so retries and released rows behind the cursor are found again.
_claim_cursor: dict[tuple[str, int], int] = {}

log = logging.getLogger(__name__)

DELIVERIES = Leasable(Delivery.id, Delivery.lease_until, Delivery.leased_by, Delivery.last_error)


class Claimed(NamedTuple):
    """A leased delivery, as the claim's RETURNING gave it (no second lookup by id)."""

    id: int
    campaign_id: int
    subscriber_id: int | None
    attempts: int
    list_id: int


def claim_deliveries(owner: str, size: int, lease: Lease | None = None) -> list[Claimed]:
    """Lease up to ``size`` due deliveries of sending campaigns to ``owner`` (under
    ``lease``, or a new one of DELIVERY_LEASE_SECONDS); commit.

    Campaigns are served in the order they started. Per campaign, one
    ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``
    round trip (lease.claim), starting after the worker's previous batch: the
    partial index of queued rows keeps the dead entries of rows just sent until
    vacuum, and a claim that always started from the lowest id walked through
    all of them.
    """
    lease = lease or Lease.start(owner, current_app.config["DELIVERY_LEASE_SECONDS"])
    now = utcnow()
    sending = db.session.execute(
        select(Campaign.id, Campaign.list_id)
        .where(Campaign.status == CampaignStatus.SENDING)
        .order_by(Campaign.started_at, Campaign.id)
    ).all()
    claimed: list[Claimed] = []
    for campaign_id, list_id in sending:
        wanted = size - len(claimed)
        if wanted <= 0:
            break
        key = (owner, campaign_id)
        after = _claim_cursor.get(key, 0)
        known = len(lease.takeovers)
        rows = _claim(lease, campaign_id, wanted, now, after)
        if len(rows) < wanted and after:
            rows += _claim(lease, campaign_id, wanted - len(rows), now, 0)
        if len(lease.takeovers) > known:
            _record_takeovers(campaign_id, lease.takeovers[known:])
        _claim_cursor[key] = max(row[0] for row in rows) if len(rows) == wanted else 0
        claimed += (Claimed(row_id, cid, sid, tries, list_id) for row_id, cid, sid, tries in rows)
    db.session.commit()
    return sorted(claimed)


def _record_takeovers(campaign_id: int, takeovers: list[Takeover]) -> None:
    """Log rows taken over from lost leases and add them to the campaign's counts
    (in the claim's transaction); see the module docstring for the bound."""
    chunk = max(1, int(current_app.config["DELIVERY_FENCE_CHUNK"]))
    taken = sum(len(t.ids) for t in takeovers)
    bound = sum(min(chunk, len(t.ids)) for t in takeovers)
    for takeover in takeovers:
        log.warning(
            "campaign %d: took over %d deliveries (%d-%d) whose lease ran out "
            "(owner %s, token %s); up to %d of them may have been sent already",
            campaign_id,
            len(takeover.ids),
            takeover.ids[0],
            takeover.ids[-1],
            takeover.owner,
            takeover.until.isoformat(),
            min(chunk, len(takeover.ids)),
        )
    db.session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id)
        .values(
            taken_over=Campaign.taken_over + taken,
            possibly_duplicated=Campaign.possibly_duplicated + bound,
        )
        .execution_options(synchronize_session=False)
    )


def _claim(
    lease: Lease, campaign_id: int, size: int, now: datetime, after: int
) -> list[tuple[Any, ...]]:
    """Lease up to ``size`` due rows of one campaign with ids above ``after``;
    return (id, campaign_id, subscriber_id, attempts) of each.

    ``campaign_id = :id`` rather than ``IN (sending campaigns)``: with the IN,
    PostgreSQL reads every queued row of the campaign after the cursor and
    sorts them to keep a batch, because the nested loop over campaigns returns
    rows in no useful order (docs/performance.md, "Why the code is shaped this
    way"). The campaign's status is checked again in the same statement, so a
    pause or cancel that commits before it is never missed.
    """
    still_sending = (
        exists()
        .where(Campaign.id == campaign_id, Campaign.status == CampaignStatus.SENDING)
        .correlate(None)
    )
    candidates = (
        select(Delivery.id)
        .where(
            Delivery.campaign_id == campaign_id,
            Delivery.status == DeliveryStatus.QUEUED,
            Delivery.id > after,
            Delivery.next_attempt_at <= now,
            free(DELIVERIES, now),
            still_sending,
        )
        .order_by(Delivery.id)
        .limit(size)
    )
    returning = (Delivery.id, Delivery.campaign_id, Delivery.subscriber_id, Delivery.attempts)
    return claim(DELIVERIES, candidates, lease, returning)


def finish_campaigns() -> None:
    """Mark sending campaigns done once nothing of theirs is queued.

    Whichever worker comes up short last does it: a worker whose rows were
    still in flight at another's check finds nothing to claim afterwards.
    """
    queued = exists().where(
        Delivery.campaign_id == Campaign.id, Delivery.status == DeliveryStatus.QUEUED
    )
    db.session.execute(
        update(Campaign)
        .where(Campaign.status == CampaignStatus.SENDING, ~queued)
        .values(status=CampaignStatus.DONE, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
