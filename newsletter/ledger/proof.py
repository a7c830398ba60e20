"""Consent evidence for one address: a JSON-ready document, and the
self-contained bundle a third party verifies with the public key alone."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from ..extensions import db
from ..models import ConsentEvent, ConsentText, MailingList, PolicyVersion, Subscriber, utcnow
from ..validation import normalise_email
from .append import PERSONAL_FIELDS
from .keys import email_digests
from .leaf import LEAF_COLUMNS, Texts, leaf_bytes, timestamp
from .proofs import inclusion_proofs
from .seal import latest_checkpoint

BUNDLE_FORMAT = "newsletter-consent-proof/1"


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
    }


def consent_bundle(address: str) -> dict[str, Any]:
    """The consent proof bundle of one address (format in docs/ledger.md).

    Every sealed event of the address with its leaf, its salt and personal
    fields (null once erased) and its inclusion proof under the latest
    checkpoint, and the consent and policy texts those leaves name. It holds
    nothing about anyone else: the proofs are hashes. Seal first so that the
    newest events are in it (``seal.seal_waiting``).
    """
    email, email_key = normalise_email(address)
    digests = email_digests(email_key)
    checkpoint = latest_checkpoint()
    if checkpoint is None:
        raise NothingSealed("no checkpoint has been signed yet")
    texts = Texts.load()
    rows = (
        db.session.execute(
            select(*LEAF_COLUMNS, *(getattr(ConsentEvent, name) for name in PERSONAL_FIELDS))
            .where(ConsentEvent.email_digest.in_(digests), ConsentEvent.seq <= checkpoint.size)
            .order_by(ConsentEvent.occurred_at, ConsentEvent.seq)
        )
        .mappings()
        .all()
    )
    # Events written before SECRET_KEY was rotated (no LEDGER_KEY) carry the
    # pseudonym under the old key: the subject names the one its events carry.
    # (Events under two keys cannot share one subject digest in this format.)
    carried = {row["email_digest"] for row in rows}
    subject_digest = next((digest for digest in digests if digest in carried), digests[0])
    proofs = inclusion_proofs([row["seq"] - 1 for row in rows], checkpoint.size)
    events, text_ids, policy_ids = [], set(), set()
    for row, proof in zip(rows, proofs, strict=True):
        text_ids.add(row["consent_text_id"])
        policy_ids.add(row["policy_version_id"])
        personal = {name: row[name] for name in PERSONAL_FIELDS if name != "salt"}
        events.append(
            {
                "index": row["seq"] - 1,
                "leaf": leaf_bytes(row, texts).decode(),
                "salt": row["salt"],
                "personal": personal if row["salt"] is not None else None,
                "inclusion_proof": [step.hex() for step in proof],
            }
        )
    return {
        "format": BUNDLE_FORMAT,
        "created_at": timestamp(utcnow()),
        "checkpoint": checkpoint.note,
        "subject": {"email": email, "email_digest": subject_digest},
        "events": events,
        "consent_texts": _consent_texts(text_ids - {None}, texts),
        "policies": _policies(policy_ids - {None}, texts),
    }


class NothingSealed(Exception):
    """No checkpoint has been signed yet."""


def _consent_texts(ids: set[int], texts: Texts) -> dict[str, Any]:
    rows = db.session.execute(
        select(ConsentText.id, ConsentText.text, MailingList.slug)
        .join(MailingList, MailingList.id == ConsentText.list_id)
        .where(ConsentText.id.in_(ids))
    )
    return {
        texts.consent[row.id].sha256: {
            "list": row.slug,
            "version": texts.consent[row.id].version,
            "text": row.text,
        }
        for row in rows
    }


def _policies(ids: set[int], texts: Texts) -> dict[str, Any]:
    rows = db.session.scalars(select(PolicyVersion).where(PolicyVersion.id.in_(ids)))
    return {
        texts.policies[row.id].sha256: {
            "version": row.version,
            "title": row.title,
            "effective_on": row.effective_on.isoformat(),
            "text": row.body_markdown,
        }
        for row in rows
    }
