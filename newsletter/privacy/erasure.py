"""Erasure (GDPR Art. 17): remove a subscriber's personal data everywhere.

What erasure does, in one transaction:

- the address goes on the suppression list as its keyed digest (reason
  ``erased``), so nothing is mailed to it again unless the person signs up
  anew and confirms (``subscriptions.service.confirm`` lifts it);
- an ``erased`` event is appended to the ledger;
- the ledger's personal fields (email, ip, user_agent, source_url) of every
  event of the address are nulled with the salt of their commitment, this one
  included. They enter the sealed leaf only through that salted commitment,
  so ``newsletter ledger verify`` still passes and the leaf links to no one,
  and the keyed ``email_digest`` still matches a disputed address;
- deliveries lose their subscriber and their SMTP error text (a refusal
  usually quotes the address); queued ones are skipped by the worker, which
  re-checks every recipient at claim time;
- queued outbox mail is deleted (its content is rendered only when sent);
- the subscriber row is deleted, and with it the subscriptions;
- the address's intake rows (signups still waiting for a worker, or failed)
  are deleted, first: a worker that claimed one then finds nothing to take
  (its DELETE is fenced by its lease) and creates nothing. A worker that took
  one already holds it locked until its commit, so the erasure's DELETE waits
  for that and then erases what the worker wrote. Intake first, then the
  subscriber, is also the worker's lock order.

:func:`erase_address` erases by address, for the command line: an address
may have only intake rows (its signup not yet processed) and no subscriber.

The ``details`` of ledger events never hold an address (a hard bounce's SMTP
reply is redacted before it is written, deliverability/suppress.py; staff are named
by id): they are part of the sealed leaf, and nothing sealed can be removed
later without breaking the tree.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, or_, select, update

from ..extensions import db
from ..ledger import Evidence, append_event, email_digests
from ..ledger.append import PERSONAL_FIELDS
from ..models import (
    Channel,
    ConsentEvent,
    ConsentEventType,
    Delivery,
    OutboxMessage,
    StaffUser,
    Subscriber,
)
from ..staff import audit
from ..subscriptions import suppression
from ..subscriptions.intake import forget_waiting
from ..transaction import transactional
from ..validation import normalise_email


class UnknownSubscriber(LookupError):
    """No subscriber with that id (perhaps erased already)."""


@dataclass(frozen=True)
class ErasureResult:
    """What erasure touched, for the caller's message (no personal data)."""

    subscriber_id: int
    ledger_events: int
    deliveries: int
    outbox_messages: int
    intake_rows: int = 0


@dataclass(frozen=True)
class AddressErasure:
    """What erasure by address touched: the subscriber's erasure, if there was
    one, and how many intake rows were deleted."""

    subscriber: ErasureResult | None
    intake_rows: int

    @property
    def found(self) -> bool:
        """Whether anything was held about the address."""
        return self.subscriber is not None or self.intake_rows > 0


@transactional
def erase_subscriber(
    subscriber_id: int,
    *,
    channel: Channel,
    actor: StaffUser | None,
    evidence: Evidence,
    ip: str | None = None,
) -> ErasureResult:
    """Erase one subscriber, all in one transaction; a staff ``actor`` gets an audit entry.

    ``channel`` says how the request came (``staff``, ``manage_page``, ...);
    ``ip`` is the staff member's address for the audit trail.
    """
    email_key = db.session.scalar(
        select(Subscriber.email_key).where(Subscriber.id == subscriber_id)
    )
    if email_key is None:
        raise UnknownSubscriber(subscriber_id)
    intake = len(forget_waiting(email_key))  # before the subscriber's lock: the worker's order
    subscriber = db.session.scalar(
        select(Subscriber).where(Subscriber.id == subscriber_id).with_for_update()
    )
    if subscriber is None:
        raise UnknownSubscriber(subscriber_id)
    before = {s.mailing_list.slug: str(s.status) for s in subscriber.subscriptions}
    digests = email_digests(subscriber.email_key)

    suppression.add(subscriber.email_key, suppression.ERASED)
    details = {"staff_id": actor.id} if actor else {}
    append_event(
        event=ConsentEventType.ERASED,
        channel=channel,
        subscriber=subscriber,
        evidence=evidence,
        details=details,
    )
    db.session.flush()
    # Every event of this address, including ones of an earlier, already
    # erased subscriber row with the same address (subscriber_id NULL).
    events = db.session.execute(
        update(ConsentEvent)
        .where(
            or_(
                ConsentEvent.subscriber_id == subscriber.id,
                ConsentEvent.email_digest.in_(digests),
            )
        )
        .values(subscriber_id=None, **dict.fromkeys(PERSONAL_FIELDS))
        .execution_options(synchronize_session=False)
    )
    deliveries = db.session.execute(
        update(Delivery)
        .where(Delivery.subscriber_id == subscriber.id)
        .values(subscriber_id=None, last_error=None)
        .execution_options(synchronize_session=False)
    )
    outbox = db.session.execute(
        delete(OutboxMessage)
        .where(OutboxMessage.subscriber_id == subscriber.id)
        .execution_options(synchronize_session=False)
    )
    if actor is not None:
        audit.record(
            actor,
            "subscriber.erase",
            "subscriber",
            subscriber.id,
            details={"channel": str(channel), "subscriptions": before},
            ip=ip,
        )
    db.session.delete(subscriber)
    return ErasureResult(
        subscriber_id=subscriber_id,
        ledger_events=_rowcount(events),
        deliveries=_rowcount(deliveries),
        outbox_messages=_rowcount(outbox),
        intake_rows=intake,
    )


@transactional
def erase_address(
    address: str, *, channel: Channel, actor: StaffUser | None, evidence: Evidence
) -> AddressErasure:
    """Erase whatever is held about ``address`` (any spelling), in one transaction.

    Its intake rows go first, then its subscriber, if any, as
    :func:`erase_subscriber` does; the intake is deleted before the subscriber
    is looked up, so a signup a worker was applying meanwhile is waited for
    and erased too. Every erasure here gets an audit entry, ``actor`` None
    meaning the command line. Raises InvalidInput for a malformed address.
    """
    _email, email_key = normalise_email(address)
    rows = forget_waiting(email_key)
    intake = len(rows)
    subscriber_id = db.session.scalar(
        select(Subscriber.id).where(Subscriber.email_key == email_key)
    )
    result = None
    if subscriber_id is not None:
        result = erase_subscriber(subscriber_id, channel=channel, actor=actor, evidence=evidence)
        intake += result.intake_rows
        if actor is None:  # erase_subscriber audits staff in the console only
            audit.record(
                None,
                "subscriber.erase",
                "subscriber",
                subscriber_id,
                details={"channel": str(channel)},
            )
    if rows:
        audit.record(actor, "intake.erase", "signup_intake", rows[0], details={"rows": rows})
    return AddressErasure(subscriber=result, intake_rows=intake)


def _rowcount(result: object) -> int:
    """Rows an UPDATE or DELETE touched (0 where the driver does not say)."""
    return max(int(getattr(result, "rowcount", 0) or 0), 0)
