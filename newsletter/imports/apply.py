"""Writing validated rows to one list, set-based, inside the caller's transaction.

Per row, in this order of precedence:
- the address is on the suppression list, or its subscription to this list is
  unsubscribed or bounced: nothing changes. An import never brings back
  someone who left or whose mail bounced (counted and listed by line);
- the subscription is active: nothing changes (``unchanged``);
- the row has evidence (consented_at and source): the subscription becomes
  active, with an ``imported`` ledger event carrying the evidence;
- otherwise: it becomes pending, with a ``requested`` event (channel
  ``import``) and a confirmation mail in the outbox, exactly as a signup
  would (none when a mail within CONFIRM_RESEND_WINDOW already names every
  list the address now has pending).
Existing subscribers keep their name and language (as with a second signup).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import bindparam, select, update

from ..bulk import bulk_insert
from ..database import allow_long_statements
from ..extensions import db
from ..ledger.batch import append_events
from ..ledger.keys import email_digest, ledger_keys
from ..ledger.pending import PendingEvent
from ..models import (
    Channel,
    ConsentEventType,
    Subscriber,
    Subscription,
    SubscriptionStatus,
)
from ..models.subscribers import new_token_key
from ..service_messages import N_
from ..subscriptions.lists import current_consent_text
from ..subscriptions.suppression import suppressed_among
from .confirmations import chunks, covered_before_import, queue_confirmations
from .validate import ImportRow, RowError

ACTIVE, PENDING, UNCHANGED, REFUSED = "active", "pending", "unchanged", "refused"
# The notice stored on the job (in English; shown in the reader's language).
LEFT_OUT = N_("Unsubscribed, bounced or suppressed: left out.")
# Rows with evidence are "imported" (consent given elsewhere, proven by the
# evidence); rows without are "requested", as a signup: consent is still owed.
IMPORTED, REQUESTED = ConsentEventType.IMPORTED, ConsentEventType.REQUESTED


class ConcurrentChange(RuntimeError):
    """Someone changed a subscription between our read and our write: try again."""


@dataclass
class ImportCounts:
    """What the import did, row by row summed up."""

    active: int = 0
    pending: int = 0
    unchanged: int = 0
    not_reactivated: int = 0
    # Lines not reactivated, for the report (bounded like errors).
    notices: list[RowError] = field(default_factory=list)


@dataclass(slots=True)
class _Known:
    """An existing subscriber and their subscription to this list, if any."""

    subscriber_id: int
    last_confirmation_sent_at: datetime | None
    subscription_id: int | None = None
    status: SubscriptionStatus | None = None


def apply_rows(
    rows: list[ImportRow], list_id: int, *, job_id: int, imported_by: int | None, now: datetime
) -> ImportCounts:
    """Write ``rows`` (all valid) to list ``list_id``; the caller commits."""
    counts = ImportCounts()
    allow_long_statements()  # COPY and set-based statements over every row
    text_id = current_consent_text(list_id).id
    known = _known_subscribers(rows, list_id)
    suppressed = _suppressed(rows)
    outcomes = [_outcome(row, known.get(row.email_key), suppressed) for row in rows]
    for row, outcome in zip(rows, outcomes, strict=True):
        if outcome == REFUSED:
            counts.not_reactivated += 1
            if len(counts.notices) < 500:
                counts.notices.append(RowError(row.line, "email", LEFT_OUT))
        elif outcome == UNCHANGED:
            counts.unchanged += 1
    changing = [(r, o) for r, o in zip(rows, outcomes, strict=True) if o in (ACTIVE, PENDING)]
    counts.active = sum(1 for _r, o in changing if o == ACTIVE)
    counts.pending = len(changing) - counts.active

    new_rows = [(r, o == PENDING) for r, o in changing if r.email_key not in known]
    ids = _insert_subscribers(new_rows, now)
    ids.update({key: k.subscriber_id for key, k in known.items()})
    covered = covered_before_import(known, now)  # before this import's writes
    _write_subscriptions(changing, known, ids, list_id, text_id, now)
    to_confirm = [r for r, o in changing if o == PENDING]
    queue_confirmations(to_confirm, covered, known, ids, list_id, now)

    events: list[PendingEvent] = []
    for row, outcome in changing:
        # The staff member by id: a ledger leaf cannot be erased, so it names no address.
        details: dict[str, Any] = {"import_job": job_id, "staff_id": imported_by}
        if row.consented_at is not None:
            details["consented_at"] = row.consented_at.isoformat()
        if row.source:
            details["source"] = row.source
        events.append(
            PendingEvent(
                event=ConsentEventType.IMPORTED
                if outcome == ACTIVE
                else ConsentEventType.REQUESTED,
                channel=Channel.IMPORT,
                subscriber_id=ids[row.email_key],
                email=row.email,
                email_key=row.email_key,
                list_id=list_id,
                consent_text_id=text_id,
                details=details,
            )
        )
    append_events(events)  # last: it holds the ledger head's lock until commit
    return counts


def _outcome(row: ImportRow, known: _Known | None, suppressed: set[str]) -> str:
    """What happens to one row (see the module docstring)."""
    status = known.status if known else None
    if row.email_key in suppressed or status in (
        SubscriptionStatus.UNSUBSCRIBED,
        SubscriptionStatus.BOUNCED,
    ):
        return REFUSED
    if status == SubscriptionStatus.ACTIVE:
        return UNCHANGED
    return ACTIVE if row.has_evidence else PENDING


def _known_subscribers(rows: list[ImportRow], list_id: int) -> dict[str, _Known]:
    """Existing subscribers among the rows, by address key, with their subscription."""
    known: dict[str, _Known] = {}
    for chunk in chunks([r.email_key for r in rows]):
        query = (
            select(
                Subscriber.email_key,
                Subscriber.id,
                Subscriber.last_confirmation_sent_at,
                Subscription.id,
                Subscription.status,
            )
            .outerjoin(
                Subscription,
                (Subscription.subscriber_id == Subscriber.id) & (Subscription.list_id == list_id),
            )
            .where(Subscriber.email_key.in_(chunk))
        )
        for email_key, subscriber_id, last_sent, subscription_id, status in db.session.execute(
            query
        ):
            known[email_key] = _Known(subscriber_id, last_sent, subscription_id, status)
    return known


def _suppressed(rows: list[ImportRow]) -> set[str]:
    """Address keys on the suppression list (matched under every ledger key)."""
    keys = ledger_keys()
    by_digest = {email_digest(r.email_key, k): r.email_key for r in rows for k in keys}
    return {by_digest[digest] for digest in suppressed_among(list(by_digest))}


def _insert_subscribers(rows: list[tuple[ImportRow, bool]], now: datetime) -> dict[str, int]:
    """Insert new subscribers (with whether they get a confirmation mail now);
    return address key -> id (read back by key: COPY returns no ids)."""
    locale = current_app.config["BABEL_DEFAULT_LOCALE"]
    bulk_insert(
        Subscriber.__table__,
        [
            {
                "email": r.email,
                "email_key": r.email_key,
                "name": r.name,
                "locale": locale,
                "token_key": new_token_key(),
                "created_at": now,
                "last_confirmation_sent_at": now if mailed else None,
            }
            for r, mailed in rows
        ],
    )
    ids: dict[str, int] = {}
    for chunk in chunks([r.email_key for r, _mailed in rows]):
        query = select(Subscriber.email_key, Subscriber.id).where(Subscriber.email_key.in_(chunk))
        for key, subscriber_id in db.session.execute(query):
            ids[key] = subscriber_id
    return ids


def _write_subscriptions(
    changing: list[tuple[ImportRow, str]],
    known: dict[str, _Known],
    ids: dict[str, int],
    list_id: int,
    text_id: int,
    now: datetime,
) -> None:
    """Insert new subscriptions and update pending ones, in executemany batches."""
    new: list[dict[str, Any]] = []
    existing: list[dict[str, Any]] = []
    for row, outcome in changing:
        active = outcome == ACTIVE
        values: dict[str, Any] = {
            "status": SubscriptionStatus.ACTIVE if active else SubscriptionStatus.PENDING,
            "consent_text_id": text_id,
            # An imported consent dates from the evidence, not from the import.
            "requested_at": row.consented_at if active else now,
            "confirmed_at": row.consented_at if active else None,
            "unsubscribed_at": None,
        }
        entry = known.get(row.email_key)
        if entry is not None and entry.subscription_id is not None:
            # Bind names may not equal the columns they set: prefix them.
            existing.append(
                {"row_id": entry.subscription_id, **{f"v_{k}": v for k, v in values.items()}}
            )
        else:
            new.append({"subscriber_id": ids[row.email_key], "list_id": list_id, **values})
    bulk_insert(Subscription.__table__, new)
    # Only a subscription that is still pending may change. Read committed
    # (PostgreSQL) lets an unsubscribe commit between our read and this write;
    # the UPDATE re-checks the row, and a count short by one means exactly that.
    table = Subscription.__table__
    guarded = (
        update(table)
        .where(table.c.id == bindparam("row_id"), table.c.status == SubscriptionStatus.PENDING)
        .values({name[2:]: bindparam(name) for name in existing[0] if name.startswith("v_")})
        if existing
        else None
    )
    for chunk in chunks(existing):
        assert guarded is not None
        result = db.session.execute(guarded, list(chunk))
        if getattr(result, "rowcount", len(chunk)) != len(chunk):
            raise ConcurrentChange("A subscription changed while the file was imported.")
