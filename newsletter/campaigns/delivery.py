"""The campaign delivery engine (DESIGN §4).

One batch: take send-rate tokens, lease queued deliveries of sending
campaigns (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), re-check consent and
suppression, personalise, send over one SMTP connection, mark the batch.
Rows are marked sent per batch, so a worker killed mid-batch leaves at most
that batch to be sent again once its lease expires; nothing is ever lost.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parseaddr

from flask import Flask, current_app
from sqlalchemy import and_, exists, or_, select, update

from ..database import is_postgresql
from ..extensions import db
from ..ledger.keys import email_digest
from ..mail.dkim import sign_message
from ..mail.message import OutgoingMail, wire_address
from ..mail.render import external_url, mail_domain
from ..mail.retry import next_attempt
from ..mail.transport import (
    PermanentFailure,
    ServerUnavailable,
    TemporaryFailure,
    open_transport,
)
from ..models import Subscriber, Subscription, SubscriptionStatus, utcnow
from ..models.campaigns import Campaign, CampaignStatus, Delivery, DeliveryStatus, Suppression
from ..tokens import Purpose, make_token
from .bounces import suppress_after_bounce
from .compose import personalise
from .mime import CampaignEnvelope, build_message, make_envelope
from .rate import wait_for_send_tokens

log = logging.getLogger(__name__)


@dataclass
class DeliveryBatch:
    """Outcome counts of one batch, and the campaigns it touched."""

    sent: int = 0
    retried: int = 0
    failed: int = 0
    skipped: int = 0
    campaigns: set[int] = field(default_factory=set)

    @property
    def handled(self) -> int:
        """Rows taken care of."""
        return self.sent + self.retried + self.failed + self.skipped


@dataclass(frozen=True)
class Recipient:
    """What the send loop needs of one delivery."""

    delivery_id: int
    campaign_id: int
    email: str
    name: str
    token_key: str
    list_id: int
    attempts: int


@dataclass(frozen=True)
class CampaignContent:
    """A sending campaign's invariant parts (content is frozen once sending starts)."""

    envelope: CampaignEnvelope
    sender_address: str
    html: str
    text: str


# Where each worker's next claim starts (by delivery id). Only a shortcut past
# the rows it already handled, never coordination: every claim still locks
# its rows in the database, and a short claim starts over from the lowest id,
# so retries and released rows behind the cursor are found again.
_claim_cursor: dict[str, int] = {}


def claim_deliveries(owner: str, size: int) -> list[int]:
    """Lease up to ``size`` due deliveries of sending campaigns; commit.

    One ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``
    round trip. Starting after the worker's previous batch matters: the partial
    index of queued rows keeps dead entries of rows just sent until vacuum, and
    a claim that always started from the lowest id walked through all of them
    (the claim was 23 % of a worker's time at 1,000,000 recipients).
    """
    now = utcnow()
    after = _claim_cursor.get(owner, 0)
    ids = _claim(owner, size, now, after)
    if len(ids) < size and after:
        ids += _claim(owner, size - len(ids), now, 0)
    _claim_cursor[owner] = max(ids) if len(ids) == size else 0
    db.session.commit()
    return sorted(ids)


def _claim(owner: str, size: int, now: datetime, after: int) -> list[int]:
    sending = select(Campaign.id).where(Campaign.status == CampaignStatus.SENDING)
    candidates = (
        select(Delivery.id)
        .where(
            Delivery.status == DeliveryStatus.QUEUED,
            Delivery.campaign_id.in_(sending),
            Delivery.id > after,
            Delivery.next_attempt_at <= now,
            or_(Delivery.lease_until.is_(None), Delivery.lease_until < now),
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
        .returning(Delivery.id)
        .execution_options(synchronize_session=False)
    )
    return list(db.session.scalars(statement))


def _recipients(ids: list[int], batch: DeliveryBatch) -> list[Recipient]:
    """Load the batch, skipping anyone no longer active or now suppressed."""
    rows = db.session.execute(
        select(
            Delivery.id,
            Delivery.campaign_id,
            Delivery.attempts,
            Campaign.list_id,
            Subscriber.email,
            Subscriber.email_key,
            Subscriber.name,
            Subscriber.token_key,
            Subscription.status,
        )
        .join(Campaign, Campaign.id == Delivery.campaign_id)
        .outerjoin(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .outerjoin(
            Subscription,
            and_(
                Subscription.subscriber_id == Delivery.subscriber_id,
                Subscription.list_id == Campaign.list_id,
            ),
        )
        .where(Delivery.id.in_(ids))
        .order_by(Delivery.id)
    ).all()
    digests = {row.email_key: email_digest(row.email_key) for row in rows if row.email_key}
    suppressed = (
        set(
            db.session.scalars(
                select(Suppression.email_digest).where(
                    Suppression.email_digest.in_(digests.values())
                )
            )
        )
        if digests
        else set()
    )
    recipients, skip = [], []
    for row in rows:
        batch.campaigns.add(row.campaign_id)
        if (
            row.email is None
            or row.status != SubscriptionStatus.ACTIVE
            or digests[row.email_key] in suppressed
        ):
            skip.append(row.id)
            continue
        recipients.append(
            Recipient(
                row.id,
                row.campaign_id,
                row.email,
                row.name or "",
                row.token_key,
                row.list_id,
                row.attempts,
            )
        )
    if skip:
        _mark(skip, DeliveryStatus.SKIPPED)
        batch.skipped += len(skip)
    return recipients


def _content(campaign_id: int) -> CampaignContent:
    """Per-campaign invariants, computed once per batch (a query and a few headers)."""
    campaign = db.session.get(Campaign, campaign_id)
    assert campaign is not None
    assert campaign.rendered_html is not None
    mailing_list = campaign.mailing_list
    envelope = make_envelope(
        campaign.sender,
        campaign.subject,
        f"{mailing_list.name} <{mailing_list.slug}.{mail_domain()}>",
        mail_domain(),
        current_app.config.get("MAIL_UNSUBSCRIBE_MAILTO") or "",
    )
    return CampaignContent(
        envelope,
        parseaddr(campaign.sender)[1],
        campaign.rendered_html,
        campaign.rendered_text or "",
    )


# Stands in for the token in a link built once per batch (URL-safe, so the
# token replacing it needs no escaping either).
TOKEN_SLOT = "TOKENSLOT7f3a"  # noqa: S105 - a placeholder, not a secret


@dataclass(frozen=True)
class LinkTemplates:
    """Absolute unsubscribe and manage URLs with a slot for the token.

    Building a URL with url_for needs a request context, which costs more than
    everything else in a recipient's rendering: done once per batch instead.
    """

    unsubscribe: str
    manage: str

    @classmethod
    def build(cls) -> LinkTemplates:
        """Resolve both routes once."""
        return cls(
            unsubscribe=external_url("public.unsubscribe", token=TOKEN_SLOT),
            manage=external_url("public.manage", token=TOKEN_SLOT),
        )


def _render(recipient: Recipient, content: CampaignContent, links: LinkTemplates) -> OutgoingMail:
    """The signed (when configured) message for one recipient."""
    unsubscribe = links.unsubscribe.replace(
        TOKEN_SLOT, make_token(Purpose.UNSUBSCRIBE, recipient.token_key, (recipient.list_id,))
    )
    manage = links.manage.replace(TOKEN_SLOT, make_token(Purpose.MANAGE, recipient.token_key))
    parts = {"name": recipient.name, "unsubscribe_url": unsubscribe, "manage_url": manage}
    address = wire_address(recipient.email)
    message = build_message(
        content.envelope,
        to_address=address,
        to_name=recipient.name,
        unsubscribe_url=unsubscribe,
        text=personalise(content.text, is_html=False, **parts),
        html=personalise(content.html, is_html=True, **parts),
    )
    return OutgoingMail(content.sender_address, address, sign_message(message))


def send_deliveries(app: Flask, owner: str) -> DeliveryBatch:
    """Run one batch of campaign mail; returns what happened."""
    batch = DeliveryBatch()
    # Waits while SEND_RATE is used up by other workers rather than return an
    # empty batch, which the worker loop would take for "nothing is due".
    wanted = wait_for_send_tokens(app.config["DELIVERY_BATCH_SIZE"])
    # The lease runs from the claim; counted from just before it, to be safe.
    renew_at = time.monotonic() + app.config["DELIVERY_LEASE_SECONDS"] / 2
    ids = claim_deliveries(owner, wanted)
    if not ids:
        _finish_campaigns()
        return batch
    recipients = _recipients(ids, batch)
    contents = {cid: _content(cid) for cid in {r.campaign_id for r in recipients}}
    links = LinkTemplates.build()
    messages = [(r, _render(r, contents[r.campaign_id], links)) for r in recipients]
    db.session.commit()  # no transaction open during SMTP I/O
    if messages:
        _send(app, messages, batch, owner, renew_at)
    if len(ids) < wanted:
        # Only a short claim can mean a campaign ran out of queued rows. Checking
        # after every batch walked the queued-rows index past every row sent so
        # far (its dead entries wait for vacuum): quadratic in the campaign.
        _finish_campaigns()
    return batch


def _send(
    app: Flask,
    messages: list[tuple[Recipient, OutgoingMail]],
    batch: DeliveryBatch,
    owner: str,
    renew_at: float,
) -> None:
    """Send a rendered batch over one connection; sent rows are marked once, at the end.

    A batch that takes longer than half its lease renews the lease before the
    next message: otherwise, on a slow server, the lease of rows still being
    sent (or sent and not yet marked) ran out and another worker sent them
    again, with no crash at all. Each single message must finish within half
    the lease (DELIVERY_LEASE_SECONDS well above MAIL_TIMEOUT).
    """
    lease_seconds = app.config["DELIVERY_LEASE_SECONDS"]
    sent: list[int] = []
    try:
        with open_transport(app) as transport:
            for position, (recipient, message) in enumerate(messages):
                if time.monotonic() >= renew_at:
                    _renew_lease([r.delivery_id for r, _ in messages], owner, lease_seconds)
                    renew_at = time.monotonic() + lease_seconds / 2
                try:
                    transport.send(message)
                except PermanentFailure as exc:
                    _fail(recipient, exc)
                    batch.failed += 1
                except Exception as exc:
                    # Temporary (4xx, connection) or unexpected: this row backs off;
                    # the connection's state is unknown, so the rest goes back to
                    # the queue for the next batch on a fresh connection.
                    if not isinstance(exc, TemporaryFailure):
                        log.exception("delivery #%d: unexpected error", recipient.delivery_id)
                    _retry([(recipient, str(exc) or repr(exc))], outage=_is_outage(exc))
                    _release([r.delivery_id for r, _ in messages[position + 1 :]])
                    batch.retried += 1
                    break
                else:
                    sent.append(recipient.delivery_id)
    except TemporaryFailure as exc:  # could not connect at all
        _retry([(r, str(exc)) for r, _ in messages], outage=_is_outage(exc))
        batch.retried += len(messages)
    finally:
        if sent:
            _mark(sent, DeliveryStatus.SENT)
            batch.sent += len(sent)


def _renew_lease(ids: list[int], owner: str, seconds: float) -> None:
    """Extend this worker's lease on the rows of its batch that are still queued."""
    db.session.execute(
        update(Delivery)
        .where(
            Delivery.id.in_(ids),
            Delivery.status == DeliveryStatus.QUEUED,
            Delivery.leased_by == owner,
            Delivery.lease_until.is_not(None),
        )
        .values(lease_until=utcnow() + timedelta(seconds=seconds))
    )
    db.session.commit()


def _mark(ids: list[int], status: DeliveryStatus) -> None:
    values: dict[str, object] = {"status": status, "lease_until": None}
    if status == DeliveryStatus.SENT:
        values["sent_at"] = utcnow()
    db.session.execute(update(Delivery).where(Delivery.id.in_(ids)).values(**values))
    db.session.commit()


def _fail(recipient: Recipient, failure: PermanentFailure) -> None:
    """A permanent refusal: the delivery fails; a hard bounce also suppresses the
    address, in the same transaction, so a crash cannot keep one without the other."""
    error = str(failure)
    db.session.execute(
        update(Delivery)
        .where(Delivery.id == recipient.delivery_id)
        .values(status=DeliveryStatus.FAILED, lease_until=None, last_error=error[:300])
    )
    if failure.hard_bounce:
        suppress_after_bounce(recipient.email, error)  # commits
    else:
        db.session.commit()


def _is_outage(exc: BaseException) -> bool:
    return isinstance(exc, ServerUnavailable)


def _retry(items: list[tuple[Recipient, str]], *, outage: bool = False) -> None:
    """Schedule another attempt per mail.retry (an outage never fails a delivery)."""
    config = current_app.config
    for recipient, error in items:
        attempts = recipient.attempts + 1
        values: dict[str, object] = {
            "attempts": attempts,
            "lease_until": None,
            "last_error": error[:300],
        }
        when = next_attempt(
            attempts,
            base_seconds=config["DELIVERY_RETRY_BASE_SECONDS"],
            max_attempts=config["DELIVERY_MAX_ATTEMPTS"],
            outage=outage,
        )
        if when is None:
            values["status"] = DeliveryStatus.FAILED
        else:
            values["next_attempt_at"] = when
        db.session.execute(
            update(Delivery).where(Delivery.id == recipient.delivery_id).values(**values)
        )
    db.session.commit()


def _release(ids: list[int]) -> None:
    if ids:
        db.session.execute(update(Delivery).where(Delivery.id.in_(ids)).values(lease_until=None))
        db.session.commit()


def _finish_campaigns() -> None:
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
