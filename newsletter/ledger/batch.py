"""Appending many ledger events at once, under one lock of the ledger head.

``ledger.chain.append_event`` locks the head, builds one ORM object and moves
the head, per event: right for a signup, slow for 100,000 imported rows. Here
the keyed digests that do not depend on the chain (address, personal fields)
are computed before the lock; under the lock only each row's hash is chained,
and the rows go to the database in one bulk insert (bulk.py; the ORM's unit
of work would handle them one by one). The hash is computed by
``chain.row_hash`` itself, so ``newsletter ledger verify`` checks these events
exactly like any other.
"""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace
from typing import Any, cast

from ..ledger import chain
from ..ledger.chain import lock_head, row_hash
from ..ledger.keys import email_digest, ledger_keys, personal_digest
from ..models import ConsentEvent
from .bulk import bulk_insert

# Every column but the key, so that a column added later is never missed.
COLUMNS = [c.key for c in ConsentEvent.__table__.columns if c.key != "id"]


def pending_event(
    *,
    event: str,
    channel: str,
    subscriber_id: int,
    email: str,
    email_key: str,
    list_id: int,
    consent_text_id: int | None,
    details: dict[str, Any],
    occurred_at: datetime,
    key: bytes,
) -> ConsentEvent:
    """An event's values with its chain-independent digests computed.

    It is a plain namespace with every column of ``consent_events`` (None
    unless set), typed as the model because ``chain.row_hash`` reads exactly
    those attributes; building 100,000 mapped objects would cost more than
    the hashing. An import has no request, so IP, user agent and page are
    empty; the evidence is in ``details``.
    """
    personal = {"email": email, "ip": None, "user_agent": None, "source_url": None}
    values = dict.fromkeys(COLUMNS)
    values.update(
        occurred_at=occurred_at,
        event=str(event),
        channel=str(channel),
        subscriber_id=subscriber_id,
        list_id=list_id,
        consent_text_id=consent_text_id,
        email_digest=email_digest(email_key, key),
        details=details,
        personal_digest=personal_digest(personal, key),
        **personal,
    )
    return cast(ConsentEvent, SimpleNamespace(**values))


def append_events(events: list[ConsentEvent]) -> None:
    """Chain and insert ``events`` in order, in the caller's transaction.

    The head is locked (``FOR UPDATE``; on SQLite the write lock is held since
    BEGIN IMMEDIATE) from here to the caller's commit, so do this last.
    """
    if not events:
        return
    key = ledger_keys()[0]
    policy_id = _policy_in_force(events[0].occurred_at)
    head = lock_head()
    seq, previous = head.seq, head.row_hash
    for row in events:
        seq += 1
        row.seq, row.prev_hash = seq, previous
        if policy_id is not None:
            row.policy_version_id = policy_id
        row.row_hash = previous = row_hash(row, key)
    bulk_insert(ConsentEvent.__table__, [dict(vars(row)) for row in events])
    head.seq, head.row_hash = seq, previous


def _policy_in_force(when: datetime) -> int | None:
    """The privacy-policy version an event at ``when`` references, as append_event does."""
    return chain.policy_in_force_id(when.date())
