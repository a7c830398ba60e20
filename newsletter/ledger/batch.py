"""Appending events as plain column values, several under one lock of the head.

``chain.append_event`` builds one mapped object per event and lets the unit
of work insert it: fine for a confirmation, too slow for 100,000 imported
rows, and a large share of a signup's cost. Here the keyed digests that do not
depend on the chain (address, personal fields) are computed before the lock;
under the lock only each row's hash is chained, and the rows go to the
database in one statement (COPY for many, one INSERT for a few). The hash is
computed by ``chain.row_hash`` itself, so ``newsletter ledger verify`` checks
these events exactly like any other.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy import insert

from ..bulk import bulk_insert
from ..extensions import db
from ..models import ConsentEvent, utcnow
from .chain import (
    Head,
    PolicyInForce,
    lock_head,
    move_head,
    personal_fields,
    policy_in_force_id,
    row_hash,
)
from .evidence import Evidence
from .keys import email_digest, ledger_keys, personal_digest

# Every column but the key, so that a column added later is never missed.
COLUMNS = [c.key for c in ConsentEvent.__table__.columns if c.key != "id"]
# Up to this many rows, one multi-row INSERT costs less than starting a COPY.
COPY_FROM = 50


def pending_event(
    *,
    event: str,
    channel: str,
    subscriber_id: int,
    email: str,
    email_key: str,
    list_id: int | None,
    consent_text_id: int | None,
    details: dict[str, Any],
    key: bytes,
    evidence: Evidence | None = None,
) -> ConsentEvent:
    """An event's values with its chain-independent digests computed.

    It is a plain namespace with every column of ``consent_events`` (None
    unless set), typed as the model because ``chain.row_hash`` reads exactly
    those attributes; building mapped objects would cost more than the
    hashing. ``evidence`` is the request's (an import has none: its evidence
    is in ``details``). The time is set by ``append_events``, under the head
    lock as ``append_event`` does, so ``seq`` order is time order.
    """
    personal = personal_fields(email, evidence or Evidence())
    values = dict.fromkeys(COLUMNS)
    values.update(
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


def append_events(events: list[ConsentEvent], policy: PolicyInForce | None = None) -> None:
    """Chain and insert ``events`` in order, in the caller's transaction.

    ``policy`` is the privacy policy in force as the caller already looked it
    up; it is looked up here when not given or when the day has changed. The
    head is locked (``FOR UPDATE``; on SQLite the write lock is held since
    BEGIN IMMEDIATE) from here to the caller's commit, so do this last.
    """
    if not events:
        return
    key = ledger_keys()[0]
    if policy is None:  # looked up before the lock, as append_event does
        today = utcnow().date()
        policy = PolicyInForce(today, policy_in_force_id(today))
    head = lock_head()
    now = utcnow()
    policy_id = policy.version_on(now.date())
    seq, previous = head.seq, head.row_hash
    for row in events:
        seq += 1
        row.seq, row.prev_hash = seq, previous
        row.occurred_at = now
        if policy_id is not None:
            row.policy_version_id = policy_id
        row.row_hash = previous = row_hash(row, key)
    rows = [dict(vars(row)) for row in events]
    if len(rows) >= COPY_FROM:
        bulk_insert(ConsentEvent.__table__, rows)
    else:
        db.session.execute(insert(ConsentEvent.__table__), rows)
    move_head(Head(seq, previous))
