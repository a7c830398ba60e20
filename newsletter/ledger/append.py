"""Appending events: each takes the next ``seq`` under the ledger head's lock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Select, insert, select, update

from ..extensions import db
from ..models import ConsentEvent, LedgerHead, PolicyVersion, Subscriber, utcnow
from .evidence import Evidence
from .keys import ledger_keys
from .pending import PendingEvent

# The columns erasure nulls together: the personal fields and the salt of
# their commitment (the commitment stays, so the sealed leaf still verifies).
PERSONAL_FIELDS = ("email", "ip", "user_agent", "source_url", "salt")


def append_event(
    *,
    event: str,
    channel: str,
    subscriber: Subscriber,
    evidence: Evidence,
    list_id: int | None = None,
    consent_text_id: int | None = None,
    details: dict[str, Any] | None = None,
    policy: PolicyInForce | None = None,
) -> ConsentEvent:
    """Append one event of ``subscriber`` inside the caller's transaction
    (``append_pending`` with the event made of these values)."""
    pending = PendingEvent.of(
        subscriber,
        event=event,
        channel=channel,
        evidence=evidence,
        list_id=list_id,
        consent_text_id=consent_text_id,
        details=details,
    )
    return append_pending(pending, policy)


def append_pending(pending: PendingEvent, policy: PolicyInForce | None = None) -> ConsentEvent:
    """Append one event inside the caller's transaction.

    ``policy`` is the privacy-policy version in force as the caller already
    looked it up (``policy_in_force_query`` in its own query); without it, or
    when the day has changed since, it is looked up here.

    The ledger head row is locked first (``FOR UPDATE`` on PostgreSQL; SQLite
    already holds its write lock from ``BEGIN IMMEDIATE``), so concurrent
    appends take turns and ``seq`` has neither gaps nor duplicates. Everything
    that need not be under the lock (the policy look-up, the digests and the
    commitment) is done before it. The clock is read under the lock:
    ``occurred_at`` is the time of the append, unless ``pending.recorded``
    gives the time and policy of a request made earlier (a signup that waited
    in the intake). So ``seq`` is only the order of appending, not time order:
    anything shown as a history orders by ``occurred_at`` (ties by ``seq``);
    the Merkle tree takes events in ``seq`` order (``ledger.seal``).
    """
    if policy is None:
        day = utcnow().date()
        policy = PolicyInForce(day, policy_in_force_id(day))
    values = pending.columns(ledger_keys()[0])
    head = lock_head()
    now = utcnow()
    policy_id = policy.version_on(now.date())
    if pending.recorded is not None:
        now, policy_id = pending.recorded.at, pending.recorded.policy_version_id
    row = ConsentEvent(seq=head + 1, occurred_at=now, policy_version_id=policy_id, **values)
    db.session.add(row)
    move_head(row.seq)
    return row


@dataclass(frozen=True)
class PolicyInForce:
    """The privacy-policy version in force on a day (UTC); None before the first import."""

    day: date
    version_id: int | None

    def version_on(self, day: date) -> int | None:
        """The version in force on ``day``: the one looked up, unless midnight
        (UTC) has passed since, and then looked up again."""
        return self.version_id if day == self.day else policy_in_force_id(day)


def policy_in_force_query(row_date: date) -> Select[int]:
    """The query for the id of the privacy-policy version in force on ``row_date``.

    The newest effective date not after that day wins; on a tie, the later
    import. Looked up per event, so a version imported with a future date
    takes over on its day with no further step. A query, so that callers can
    fold it into one of their own as a scalar subquery.
    """
    return (
        select(PolicyVersion.id)
        .where(PolicyVersion.effective_on <= row_date)
        .order_by(PolicyVersion.effective_on.desc(), PolicyVersion.version.desc())
        .limit(1)
    )


def policy_in_force_id(row_date: date) -> int | None:
    """The id of the privacy-policy version in force on ``row_date`` (UTC), if any."""
    return db.session.scalar(policy_in_force_query(row_date))


def lock_head() -> int:
    """The ``seq`` of the last event, with the ledger head locked until the
    transaction ends: every append (one event or a batch) holds it, so
    appends are strictly serial.

    The session's pending writes are flushed first, so that the lock is held
    only for the appends and COMMIT. Read and written in Core (``move_head``),
    not as a mapped object: no identity map to keep in step, and cheaper on
    the signup path that every visitor takes.
    """
    db.session.flush()
    table = LedgerHead.__table__
    seq = db.session.scalar(select(table.c.seq).where(table.c.id == 1).with_for_update())
    if seq is None:  # the very first append
        db.session.execute(insert(table).values(id=1, seq=0))
        return 0
    return int(seq)


def move_head(seq: int) -> None:
    """Point the (locked) ledger head at the last event appended."""
    table = LedgerHead.__table__
    db.session.execute(update(table).where(table.c.id == 1).values(seq=seq))
