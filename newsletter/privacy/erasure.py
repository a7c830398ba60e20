"""Erasure (GDPR Art. 17): remove a subscriber's personal data everywhere.

What erasure does, in one transaction:

- the address goes on the suppression list as its keyed digest (reason
  ``erased``), so nothing is mailed to it again unless the person signs up
  anew and confirms (``subscriptions.service.confirm`` lifts it);
- an ``erased`` event is appended to the ledger;
- the ledger's personal fields (email, ip, user_agent, source_url) of every
  event of the address are nulled, this one included. They enter the row hash
  only through ``personal_digest``, so ``newsletter ledger verify``
  still passes, and the keyed ``email_digest`` still matches a disputed address;
- deliveries lose their subscriber and their SMTP error text (a refusal
  usually quotes the address); queued ones are skipped by the worker, which
  re-checks every recipient at claim time;
- queued outbox mail is deleted (its content is rendered only when sent);
- the subscriber row is deleted, and with it the subscriptions.

The hashed ``details`` of ledger events never hold an address: a hard
bounce's SMTP reply is redacted before it is written (campaigns/bounces.py),
because nothing hashed can be removed later without breaking the chain.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, or_, select, update

from ..extensions import db
from ..ledger import Evidence, append_event, email_digests
from ..ledger.chain import PERSONAL_FIELDS
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
from ..transaction import transactional


class UnknownSubscriber(LookupError):
    """No subscriber with that id (perhaps erased already)."""


@dataclass(frozen=True)
class ErasureResult:
    """What erasure touched, for the caller's message (no personal data)."""

    subscriber_id: int
    ledger_events: int
    deliveries: int
    outbox_messages: int


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
    )


def _rowcount(result: object) -> int:
    """Rows an UPDATE or DELETE touched (0 where the driver does not say)."""
    return max(int(getattr(result, "rowcount", 0) or 0), 0)
