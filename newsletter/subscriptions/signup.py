"""What a signup does, applied by the worker to intake rows in batches.

For each row, in order: the address is claimed (a new subscriber) or found
and locked, each list asked for becomes pending unless it is active, a
confirmation mail is queued unless the resend window says one already stands
for those lists, and the ledger gets a ``requested`` event per list, with the
request's time, evidence, consent text and policy. New addresses, the path
nearly every row takes, are written as multi-row INSERTs; an address already
known goes through the same steps as the preference page. The rows' events
are appended together, in row order, under one lock of the ledger head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flask import current_app
from sqlalchemy import Row, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from ..extensions import db
from ..ledger import Evidence
from ..ledger.append import PolicyInForce
from ..ledger.batch import append_events
from ..ledger.pending import PendingEvent, Recorded
from ..models import (
    Channel,
    ConsentEventType,
    ConsentText,
    MailingList,
    OutboxKind,
    OutboxMessage,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    utcnow,
)
from .lifecycle import Terms, maybe_send_confirmation, request_lists

Intake = Row[Any]  # a row of signup_intake, as taken by the worker


def refused(rows: Sequence[Intake]) -> dict[int, str]:
    """Row id -> why it cannot be done, for rows naming a list that is gone or
    archived, or a consent text that is not that list's. Two queries."""
    list_ids = {int(pair[0]) for row in rows for pair in row.terms}
    text_ids = {int(pair[1]) for row in rows for pair in row.terms}
    lists = dict(
        db.session.execute(
            select(MailingList.id, MailingList.archived_at).where(MailingList.id.in_(list_ids))
        ).all()
    )
    texts = dict(
        db.session.execute(
            select(ConsentText.id, ConsentText.list_id).where(ConsentText.id.in_(text_ids))
        ).all()
    )
    reasons: dict[int, str] = {}
    for row in rows:
        for list_id, text_id in row.terms:
            if list_id not in lists:
                reasons[row.id] = f"list {list_id} no longer exists"
            elif lists[list_id] is not None:
                reasons[row.id] = f"list {list_id} was archived after the signup"
            elif texts.get(text_id) != list_id:
                reasons[row.id] = f"consent text {text_id} of list {list_id} no longer exists"
            if row.id in reasons:
                break
    return reasons


def apply_signups(rows: Sequence[Intake]) -> None:
    """Do what each row asks for, in the caller's transaction (see the module)."""
    if not rows:
        return
    first: dict[str, Intake] = {}
    for row in rows:
        first.setdefault(row.email_key, row)
    # In address order: two batches inserting the same new addresses take
    # their row locks in the same order and cannot deadlock.
    created = _insert_addresses(sorted(first.values(), key=lambda row: str(row.email_key)))
    new = {first[key].id: subscriber_id for key, subscriber_id in created.items()}
    _lock_known(sorted({str(row.email_key) for row in rows if row.id not in new}))
    _request_for_new([row for row in rows if row.id in new], new)
    events: list[PendingEvent] = []
    for row in rows:
        if row.id in new:
            events += _events_of_new(row, new[row.id])
        else:
            events += _request_for_known(row)
    append_events(events)


def _lock_known(email_keys: list[str]) -> None:
    """Lock the known addresses' subscriber rows in address order before any of
    them is changed: the rows are then handled in the batch's order, and two
    batches holding the same addresses in other orders would otherwise lock
    them crosswise and deadlock."""
    if email_keys:
        db.session.execute(
            select(Subscriber.id)
            .where(Subscriber.email_key.in_(email_keys))
            .order_by(Subscriber.email_key)
            .with_for_update()
        ).all()


def _recorded(row: Intake) -> Recorded:
    """The request's time and the policy in force then."""
    return Recorded(at=row.received_at, policy_version_id=row.policy_version_id)


def _evidence(row: Intake) -> Evidence:
    """The request's evidence as stored with the row."""
    return Evidence(ip=row.ip, user_agent=row.user_agent, source_url=row.source_url)


def _insert_addresses(rows: Sequence[Intake]) -> dict[str, int]:
    """Insert the addresses not yet known; email key -> new subscriber id.

    One ``INSERT ... ON CONFLICT DO NOTHING RETURNING``: a known address (or
    one another transaction is inserting now; PostgreSQL waits for it) is left
    out. A new subscriber gets a confirmation at once, so its
    ``last_confirmation_sent_at`` is written with the row.
    """
    if not rows:
        return {}
    insert_of = postgresql.insert if db.engine.dialect.name == "postgresql" else sqlite.insert
    table = Subscriber.__table__
    default_locale = current_app.config["BABEL_DEFAULT_LOCALE"]
    now = utcnow()
    statement = (
        insert_of(table)
        .values(
            [
                {
                    "email": row.email,
                    "email_key": row.email_key,
                    "name": row.name,
                    "locale": row.locale or default_locale,
                    "last_confirmation_sent_at": now,
                    "created_at": row.received_at,
                }
                for row in rows
            ]
        )
        .on_conflict_do_nothing(index_elements=[table.c.email_key])
        .returning(table.c.email_key, table.c.id)
    )
    return dict(db.session.execute(statement).all())


def _request_for_new(rows: Sequence[Intake], subscriber_ids: dict[int, int]) -> None:
    """New addresses: every list pending and one confirmation mail each, as
    two multi-row INSERTs. ``subscriber_ids`` maps row id -> subscriber id."""
    if not rows:
        return
    now = utcnow()
    db.session.execute(
        insert(Subscription.__table__),
        [
            {
                "subscriber_id": subscriber_ids[row.id],
                "list_id": list_id,
                "status": SubscriptionStatus.PENDING,
                "consent_text_id": text_id,
                "requested_at": row.received_at,
            }
            for row in rows
            for list_id, text_id in row.terms
        ],
    )
    db.session.execute(
        insert(OutboxMessage.__table__),
        [
            {
                "kind": OutboxKind.CONFIRM,
                "subscriber_id": subscriber_ids[row.id],
                "payload": {"lists": sorted(int(pair[0]) for pair in row.terms)},
                "next_attempt_at": now,
                "created_at": now,
            }
            for row in rows
        ],
    )


def _events_of_new(row: Intake, subscriber_id: int) -> list[PendingEvent]:
    """The ``requested`` events of a new address's row, one per list."""
    return [
        PendingEvent(
            event=ConsentEventType.REQUESTED,
            channel=row.channel,
            subscriber_id=subscriber_id,
            email=row.email,
            email_key=row.email_key,
            evidence=_evidence(row),
            list_id=list_id,
            consent_text_id=text_id,
            recorded=_recorded(row),
        )
        for list_id, text_id in row.terms
    ]


def _request_for_known(row: Intake) -> list[PendingEvent]:
    """A known address: lock it, make the lists pending (an active one stays
    active), send a confirmation unless one stands; return the events.

    Name and language are taken only from the first signup: an
    unauthenticated form must not overwrite what a confirmed subscriber chose.
    """
    db.session.flush()
    subscriber = db.session.scalars(
        select(Subscriber)
        .where(Subscriber.email_key == row.email_key)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    terms = Terms(
        texts={int(list_id): int(text_id) for list_id, text_id in row.terms},
        policy=PolicyInForce(row.received_at.date(), row.policy_version_id),
    )
    events = request_lists(
        subscriber, terms, Channel(row.channel), _evidence(row), recorded=_recorded(row)
    )
    maybe_send_confirmation(subscriber)
    return events
