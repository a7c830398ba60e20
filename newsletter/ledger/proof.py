"""Consent evidence for one address, as a JSON-ready document."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from ..extensions import db
from ..models import ConsentEvent, ConsentText, MailingList, PolicyVersion, Subscriber
from ..validation import normalise_email
from .keys import email_digests


def consent_proof(address: str) -> dict[str, Any]:
    """Everything the ledger holds on an address: its state and every event.

    Matching is by the keyed pseudonym, so events survive erasure and are still
    found for a disputed address; their personal fields are then null.

    Events are in the order they happened: by ``occurred_at``, ties by
    ``seq``. Not by ``seq`` alone: that is the order of appending, and a
    signup's events are appended by a worker after the request waited in the
    intake, with the request's time: someone who signs up for one more list
    and unsubscribes from another while that signup waits would otherwise see
    the unsubscribe first. Each event keeps its ``seq``, its place in the
    chain.
    """
    email, email_key = normalise_email(address)
    digests = email_digests(email_key)
    subscriber = db.session.scalar(select(Subscriber).where(Subscriber.email_key == email_key))
    rows = db.session.execute(
        select(ConsentEvent, MailingList.slug, ConsentText, PolicyVersion.version)
        .outerjoin(MailingList, MailingList.id == ConsentEvent.list_id)
        .outerjoin(ConsentText, ConsentText.id == ConsentEvent.consent_text_id)
        .outerjoin(PolicyVersion, PolicyVersion.id == ConsentEvent.policy_version_id)
        .where(ConsentEvent.email_digest.in_(digests))
        .order_by(ConsentEvent.occurred_at, ConsentEvent.seq)
    ).all()
    return {
        "email": email,
        "email_digest": digests[0],
        "subscriber": _subscriber(subscriber) if subscriber else None,
        "events": [_event(event, slug, text, policy) for event, slug, text, policy in rows],
    }


def _subscriber(subscriber: Subscriber) -> dict[str, Any]:
    return {
        "email": subscriber.email,
        "name": subscriber.name,
        "locale": subscriber.locale,
        "created_at": subscriber.created_at.isoformat(),
        "subscriptions": [
            {
                "list": s.mailing_list.slug,
                "status": str(s.status),
                "consent_text_version": s.consent_text.version,
                "requested_at": s.requested_at.isoformat(),
                "confirmed_at": s.confirmed_at.isoformat() if s.confirmed_at else None,
                "unsubscribed_at": s.unsubscribed_at.isoformat() if s.unsubscribed_at else None,
            }
            for s in subscriber.subscriptions
        ],
    }


def _event(
    event: ConsentEvent, slug: str | None, text: ConsentText | None, policy: int | None
) -> dict[str, Any]:
    """One event as evidence: what, when, how, the texts shown, and its circumstances."""
    return {
        "seq": event.seq,
        "occurred_at": event.occurred_at.isoformat(),
        "event": event.event,
        "channel": event.channel,
        "list": slug,
        "consent_text": {"version": text.version, "text": text.text} if text else None,
        # The privacy-policy version in force then (/privacy/<version>).
        "privacy_policy_version": policy,
        "ip": event.ip,
        "user_agent": event.user_agent,
        "source_url": event.source_url,
        "details": event.details,
        "row_hash": event.row_hash,
    }
