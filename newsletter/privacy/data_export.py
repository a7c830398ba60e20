"""Right of access and portability (GDPR Art. 15, 20): a person's data as one JSON document.

The same document serves the subscriber (through a fresh, expiring link mailed
on request from the preference page), staff (the subscriber page in the
console) and the operator (``newsletter privacy export EMAIL``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import select

from ..extensions import db
from ..ledger.proof import NothingSealed, consent_bundle, consent_proof
from ..ledger.status import seal_for_proof
from ..mail.outbox import enqueue
from ..models import (
    Campaign,
    ConsentText,
    Delivery,
    MailingList,
    OutboxKind,
    OutboxMessage,
    PolicyVersion,
    SignupIntake,
    StaffUser,
    Subscriber,
    utcnow,
)
from ..staff import audit
from ..subscriptions.intake import waiting_of
from ..subscriptions.service import subscriber_for
from ..tokens import TokenPayload
from ..transaction import transactional
from ..validation import normalise_email
from .erasure import UnknownSubscriber

FORMAT_VERSION = 1


@transactional
def request_data_export(payload: TokenPayload, *, proof: bool = False) -> bool:
    """Queue a mail with a fresh download link to the subscriber's own address.

    The link goes to the mailbox, never into the page: a preference link may
    have been forwarded, and only the mailbox owner should get the data. At
    most one such mail per CONFIRM_RESEND_WINDOW, so a forwarded link cannot
    be used to flood the person's inbox. Returns whether a mail was queued.

    ``proof``: the person asked for the proof of their consent. The link is
    the same (its page offers the data and the proof bundle); only the mail's
    words differ. Both kinds share the window: the mail sent a moment ago
    already leads to both downloads.
    """
    subscriber = subscriber_for(payload)
    window = timedelta(seconds=current_app.config["CONFIRM_RESEND_WINDOW"])
    recent = db.session.scalar(
        select(OutboxMessage.id)
        .where(
            OutboxMessage.subscriber_id == subscriber.id,
            OutboxMessage.kind == OutboxKind.DATA_EXPORT,
            OutboxMessage.created_at > utcnow() - window,
        )
        .limit(1)
    )
    if recent is not None:
        return False
    if proof:
        enqueue(OutboxKind.DATA_EXPORT, subscriber, proof=True)
    else:
        enqueue(OutboxKind.DATA_EXPORT, subscriber)
    return True


def subscriber_data_export(subscriber_id: int) -> dict[str, Any]:
    """Everything held about one subscriber, JSON-ready; raises UnknownSubscriber.

    Profile, subscriptions with the consent text each was given under, the
    full consent history from the ledger (matched by the keyed pseudonym, so
    events of an earlier, erased registration of the same address are
    included), every mail: campaign deliveries and transactional mail, and
    the signups of the address still waiting in the intake or failed there
    (``signups_waiting``: what was received, as received), and the consent
    proof bundle (``consent_proof``, see :func:`consent_proof_bundle`). The
    link key (``token_key``) is left out: it is a credential, not data about
    the person.
    """
    subscriber = db.session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise UnknownSubscriber(subscriber_id)
    proof = consent_proof(subscriber.email)
    return {
        **_heading(),
        "profile": {
            "email": subscriber.email,
            "name": subscriber.name,
            "language": subscriber.locale,
            "created_at": _iso(subscriber.created_at),
            "last_confirmation_mail_at": _iso(subscriber.last_confirmation_sent_at),
        },
        "subscriptions": [
            {
                "list": s.mailing_list.slug,
                "list_name": s.mailing_list.name,
                "status": str(s.status),
                "consent_text": {"version": s.consent_text.version, "text": s.consent_text.text},
                "requested_at": _iso(s.requested_at),
                "confirmed_at": _iso(s.confirmed_at),
                "unsubscribed_at": _iso(s.unsubscribed_at),
            }
            for s in sorted(subscriber.subscriptions, key=lambda s: s.list_id)
        ],
        "consent_history": proof["events"],
        "mails": {
            "newsletters": _deliveries(subscriber.id),
            "transactional": _outbox(subscriber.id),
        },
        "signups_waiting": intake_of(subscriber.email_key),
        "consent_proof": consent_proof_bundle(subscriber.email),
    }


def consent_proof_bundle(address: str) -> dict[str, Any] | None:
    """The address's consent proof bundle (``newsletter-verify`` checks it with
    the public key alone) over the events sealed so far; None before the first
    seal. Callers seal first (``seal_for_proof``) to include the newest events.

    Its ``created_at`` is left out: the export's ``generated_at`` says when it
    was made, and an export read twice over the same sealed tree is the same
    document apart from that one field.
    """
    try:
        bundle = consent_bundle(address)
    except NothingSealed:
        return None
    bundle.pop("created_at", None)
    return bundle


def _heading() -> dict[str, Any]:
    """The document's format, time and the controller (from the settings)."""
    config = current_app.config
    return {
        "format": "newsletter.data-export",
        "format_version": FORMAT_VERSION,
        "generated_at": _iso(utcnow()),
        "controller": {
            "name": config["ORGANIZATION_NAME"],
            "address": config["POSTAL_ADDRESS"],
            "website": config.get("BASE_URL") or None,
        },
    }


def audited_intake_export(
    address: str, *, actor: StaffUser | None, ip: str | None = None
) -> dict[str, Any] | None:
    """See :func:`_audited_intake_export`; seals what waits first, so the
    export's consent proof covers the newest events."""
    seal_for_proof()
    return _audited_intake_export(address, actor=actor, ip=ip)


@transactional
def _audited_intake_export(
    address: str, *, actor: StaffUser | None, ip: str | None = None
) -> dict[str, Any] | None:
    """The export of an address with no subscriber (its signup not processed
    yet, or failed): the same document, with no profile, subscriptions or mail,
    and its intake rows; the ledger history of an earlier, erased registration
    is included, as for a subscriber. None when no intake row has the address.
    Audited like :func:`_audited_data_export`. Raises InvalidInput for a
    malformed address.
    """
    email, email_key = normalise_email(address)
    rows = intake_of(email_key)
    if not rows:
        return None
    audit.record(actor, "intake.export", "signup_intake", details={"rows": len(rows)}, ip=ip)
    return {
        **_heading(),
        "profile": None,
        "subscriptions": [],
        "consent_history": consent_proof(email)["events"],
        "mails": {"newsletters": [], "transactional": []},
        "signups_waiting": rows,
        "consent_proof": consent_proof_bundle(email),
    }


def audited_data_export(
    subscriber_id: int, *, actor: StaffUser | None, ip: str | None = None
) -> dict[str, Any]:
    """See :func:`_audited_data_export`; seals what waits first, so the
    export's consent proof covers the newest events."""
    seal_for_proof()
    return _audited_data_export(subscriber_id, actor=actor, ip=ip)


@transactional
def _audited_data_export(
    subscriber_id: int, *, actor: StaffUser | None, ip: str | None = None
) -> dict[str, Any]:
    """The data export handed out by staff (``actor`` None: the command line).

    Handing out someone's data is a staff action like any other: its audit
    entry is written in the same transaction as the export is read.
    """
    document = subscriber_data_export(subscriber_id)
    audit.record(actor, "subscriber.export", "subscriber", subscriber_id, ip=ip)
    return document


def subscriber_id_for_address(address: str) -> int:
    """The id of the subscriber with this address (any spelling); raises UnknownSubscriber."""
    _email, email_key = normalise_email(address)
    subscriber_id = db.session.scalar(
        select(Subscriber.id).where(Subscriber.email_key == email_key)
    )
    if subscriber_id is None:
        raise UnknownSubscriber(address)
    return int(subscriber_id)


def _deliveries(subscriber_id: int) -> list[dict[str, Any]]:
    """Each campaign sent (or meant) to the subscriber, oldest first."""
    rows = db.session.execute(
        select(Delivery, Campaign.subject, MailingList.slug)
        .join(Campaign, Campaign.id == Delivery.campaign_id)
        .join(MailingList, MailingList.id == Campaign.list_id)
        .where(Delivery.subscriber_id == subscriber_id)
        .order_by(Delivery.id)
    )
    return [
        {
            "campaign": delivery.campaign_id,
            "subject": subject,
            "list": slug,
            "status": str(delivery.status),
            "attempts": delivery.attempts,
            "sent_at": _iso(delivery.sent_at),
        }
        for delivery, subject, slug in rows
    ]


def _outbox(subscriber_id: int) -> list[dict[str, Any]]:
    """Confirmation, welcome and data-export mails, oldest first."""
    rows = db.session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.subscriber_id == subscriber_id)
        .order_by(OutboxMessage.id)
    )
    return [
        {
            "kind": str(row.kind),
            "status": str(row.status),
            "created_at": _iso(row.created_at),
            "sent_at": _iso(row.sent_at),
        }
        for row in rows
    ]


def intake_of(email_key: str) -> list[dict[str, Any]]:
    """The address's intake rows as received, oldest first: ``waiting`` for a
    worker or ``failed`` (kept for staff); the lists asked for with the
    consent text shown, and the evidence stored with the request."""
    rows = waiting_of(email_key)
    pairs = [(int(pair[0]), int(pair[1])) for row in rows for pair in row.terms]
    lists = {
        m.id: m
        for m in db.session.scalars(
            select(MailingList).where(MailingList.id.in_({p[0] for p in pairs}))
        )
    }
    texts = {
        t.id: t
        for t in db.session.scalars(
            select(ConsentText).where(ConsentText.id.in_({p[1] for p in pairs}))
        )
    }
    policy_ids = {r.policy_version_id for r in rows if r.policy_version_id is not None}
    # .all(): dict() of a Result itself would take it for a mapping (it has keys()).
    policies = dict(
        db.session.execute(
            select(PolicyVersion.id, PolicyVersion.version).where(PolicyVersion.id.in_(policy_ids))
        ).all()
    )
    return [_intake_row(row, lists, texts, policies) for row in rows]


def _intake_row(
    row: SignupIntake,
    lists: dict[int, MailingList],
    texts: dict[int, ConsentText],
    policies: dict[int, int],
) -> dict[str, Any]:
    """One intake row for the export (a list deleted since shows its slug as None)."""
    asked = []
    for list_id, text_id in row.terms:
        mailing_list, text = lists.get(int(list_id)), texts.get(int(text_id))
        asked.append(
            {
                "list": mailing_list.slug if mailing_list else None,
                "list_name": mailing_list.name if mailing_list else None,
                "consent_text": {"version": text.version, "text": text.text} if text else None,
            }
        )
    return {
        "status": "failed" if row.failed_at is not None else "waiting",
        "received_at": _iso(row.received_at),
        "channel": row.channel,
        "email": row.email,
        "name": row.name,
        "language": row.locale,
        "lists": asked,
        "privacy_policy_version": policies.get(row.policy_version_id or 0),
        "ip": row.ip,
        "user_agent": row.user_agent,
        "source_url": row.source_url,
        "failed_at": _iso(row.failed_at),
    }


def _iso(value: datetime | None) -> str | None:
    """ISO 8601 with the UTC offset, or None."""
    return value.isoformat() if value is not None else None
