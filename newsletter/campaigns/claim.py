"""Leasing campaign deliveries: claim a batch, renew or release it, finish campaigns.

A claim leases rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's single
writer gives the same exclusivity) and commits, so no transaction stays open
while the batch is sent. A worker that dies leaves its rows leased; once the
lease has run out another worker claims them again. Nothing is ever lost.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

from flask import current_app
from sqlalchemy import (
    exists,
    or_,
    select,
    update,
)

from ..database import among, is_postgresql
from ..extensions import db
from ..models import utcnow
from ..models.campaigns import Campaign, CampaignStatus, Delivery, DeliveryStatus

# Where each worker's next claim in a campaign starts (by delivery id). Only a
# shortcut past the rows it already handled, never coordination: every claim
# still locks its rows in the database, and a short claim starts over from the
# lowest id, so retries and released rows behind the cursor are found again.
_claim_cursor: dict[tuple[str, int], int] = {}


class Claimed(NamedTuple):
    """A leased delivery, as the claim's RETURNING gave it (no second lookup by id)."""

    id: int
    campaign_id: int
    subscriber_id: int | None
    attempts: int
    list_id: int


def claim_deliveries(owner: str, size: int) -> list[Claimed]:
    """Lease up to ``size`` due deliveries of sending campaigns; commit.

    Campaigns are served in the order they started. Per campaign, one
    ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``
    round trip, starting after the worker's previous batch: the partial index
    of queued rows keeps the dead entries of rows just sent until vacuum, and a
    claim that always started from the lowest id walked through all of them.
    """
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
        rows = _claim(owner, campaign_id, wanted, now, after)
        if len(rows) < wanted and after:
            rows += _claim(owner, campaign_id, wanted - len(rows), now, 0)
        _claim_cursor[key] = max(row[0] for row in rows) if len(rows) == wanted else 0
        claimed += (Claimed(*row, list_id=list_id) for row in rows)
    db.session.commit()
    return sorted(claimed)


def _claim(
    owner: str, campaign_id: int, size: int, now: datetime, after: int
) -> list[tuple[int, int, int | None, int]]:
    """Lease up to ``size`` due rows of one campaign with ids above ``after``.

    ``campaign_id = :id`` rather than ``IN (sending campaigns)``: with the IN,
    PostgreSQL read every queued row of the campaign after the cursor and
    sorted them to keep 500 (75.6 ms a claim at 1,000,000 recipients, against
    0.66 ms), because the nested loop over campaigns returns rows in no useful
    order. The campaign's status is checked again in the same statement, so a
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
            or_(Delivery.lease_until.is_(None), Delivery.lease_until < now),
            still_sending,
        )
        .order_by(Delivery.id)
        .limit(size)
    )
    if is_postgresql():
        candidates = candidates.with_for_update(skip_locked=True, of=Delivery)
    lease = now + timedelta(seconds=current_app.config["DELIVERY_LEASE_SECONDS"])
    statement = (
        update(Delivery)
        .where(Delivery.id.in_(candidates.scalar_subquery()))
        .values(lease_until=lease, leased_by=owner)
        .returning(Delivery.id, Delivery.campaign_id, Delivery.subscriber_id, Delivery.attempts)
        .execution_options(synchronize_session=False)
    )
    return [tuple(row) for row in db.session.execute(statement)]  # type: ignore[misc]


def renew_lease(ids: list[int], owner: str, seconds: float) -> None:
    """Extend this worker's lease on the rows of its batch that are still queued."""
    db.session.execute(
        update(Delivery)
        .where(
            among(Delivery.id, ids),
            Delivery.status == DeliveryStatus.QUEUED,
            Delivery.leased_by == owner,
            Delivery.lease_until.is_not(None),
        )
        .values(lease_until=utcnow() + timedelta(seconds=seconds))
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


def release(ids: list[int]) -> None:
    """Give leased rows back untouched, for the next batch."""
    if ids:
        db.session.execute(
            update(Delivery)
            .where(among(Delivery.id, ids))
            .values(lease_until=None)
            .execution_options(synchronize_session=False)
        )
        db.session.commit()


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
