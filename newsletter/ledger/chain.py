"""The hash chain: every event carries the hash of the one before it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Select, insert, select, update

from ..extensions import db
from ..models import ConsentEvent, LedgerHead, PolicyVersion, Subscriber, utcnow
from .evidence import Evidence
from .keys import canonical_json, email_digest, keyed_digest, ledger_keys, personal_digest
from .pending import PendingEvent

GENESIS_HASH = "0" * 64
PERSONAL_FIELDS = ("email", "ip", "user_agent", "source_url")
# The columns the row hash covers (with the personal fields through personal_digest).
HASHED_COLUMNS = (
    "seq",
    "occurred_at",
    "event",
    "channel",
    "list_id",
    "consent_text_id",
    "email_digest",
    "details",
    "personal_digest",
    "prev_hash",
    "policy_version_id",
)


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
    appends take turns and each sees its true predecessor. Everything that
    need not be under the lock (the policy look-up, the digests) is done
    before it. The clock is read under the lock: ``occurred_at`` is the time
    of the append, unless ``pending.recorded`` gives the time and policy of a
    request made earlier (a signup that waited in the intake). So ``seq`` is
    only the order of appending, not time order: anything shown as a history
    orders by ``occurred_at`` (ties by ``seq``); only the chain is walked in
    ``seq`` order.
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
    row = ConsentEvent(
        seq=head.seq + 1,
        occurred_at=now,
        policy_version_id=policy_id,
        prev_hash=head.row_hash,
        **values,
    )
    row.row_hash = row_hash(row)
    db.session.add(row)
    move_head(Head(row.seq, row.row_hash))
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


@dataclass(frozen=True)
class Head:
    """Where the chain ends: the last event's ``seq`` and hash."""

    seq: int
    row_hash: str


def lock_head() -> Head:
    """The ledger head, locked until the transaction ends: every append (one
    event or a batch) holds it, so the chain stays strictly serial.

    The session's pending writes are flushed first, so that the lock is held
    only for the appends and COMMIT. Read and written in Core (``move_head``),
    not as a mapped object: no identity map to keep in step, and cheaper on
    the signup path that every visitor takes.
    """
    db.session.flush()
    table = LedgerHead.__table__
    row = db.session.execute(
        select(table.c.seq, table.c.row_hash).where(table.c.id == 1).with_for_update()
    ).first()
    if row is None:  # the very first append
        db.session.execute(insert(table).values(id=1, seq=0, row_hash=GENESIS_HASH))
        return Head(0, GENESIS_HASH)
    return Head(row.seq, row.row_hash)


def move_head(head: Head) -> None:
    """Point the (locked) ledger head at the last event appended."""
    table = LedgerHead.__table__
    db.session.execute(
        update(table).where(table.c.id == 1).values(seq=head.seq, row_hash=head.row_hash)
    )


def row_hash(row: ConsentEvent, key: bytes | None = None) -> str:
    """The row hash of a stored (or mapped) event; see ``hash_of``."""
    return hash_of({name: getattr(row, name) for name in HASHED_COLUMNS}, key)


def hash_of(values: Mapping[str, Any], key: bytes | None = None) -> str:
    """HMAC-SHA256 (ledger key) over an event's non-personal fields and its personal digest.

    Keyed, so that someone who can write to the database but does not hold the
    ledger key cannot edit an event and recompute every hash after it: a plain
    SHA-256 chain would let them. ``subscriber_id`` is left out on purpose:
    erasure sets it to NULL. The keyed email digest identifies the person instead.
    ``values`` holds at least the ``HASHED_COLUMNS``.
    """
    content = {
        "seq": values["seq"],
        "occurred_at": _timestamp(values["occurred_at"]),
        "event": values["event"],
        "channel": values["channel"],
        "list_id": values["list_id"],
        "consent_text_id": values["consent_text_id"],
        "email_digest": values["email_digest"],
        "details": values["details"] or {},
        "personal_digest": values["personal_digest"],
        "prev_hash": values["prev_hash"],
    }
    # The policy reference came after the first events were written. Those rows
    # were hashed without the key, so it enters the content only when set: old
    # rows still verify, and on new rows removing, setting or changing it breaks
    # the hash like any other edit (a NULL hashes differently from a value).
    if values["policy_version_id"] is not None:
        content["policy_version_id"] = values["policy_version_id"]
    return keyed_digest(key or ledger_keys()[0], "row:" + canonical_json(content))


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class ChainProblem:
    """One break in the chain: where, and what is wrong."""

    seq: int
    reason: str

    def __str__(self) -> str:
        return f"event #{self.seq}: {self.reason}"


@dataclass(frozen=True)
class ChainReport:
    """The result of a full verification."""

    events: int
    problems: list[ChainProblem]
    head_seq: int = 0
    head_hash: str = GENESIS_HASH

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


def verify_chain(batch_size: int = 1000) -> ChainReport:
    """Recompute the whole chain, streaming rows so memory stays flat.

    Finds edited rows (hash mismatch), deleted rows (a gap in ``seq`` or a
    ``prev_hash`` that names another row, or a head that names a later row),
    reordered rows, personal fields that do not match their digest, and an
    event re-attributed to another subscriber.
    """
    keys = ledger_keys()
    problems: list[ChainProblem] = []
    expected_prev, expected_seq, count = GENESIS_HASH, 1, 0
    for row, subscriber_email_key in _stream_events(batch_size):
        count += 1
        if row.seq != expected_seq:
            problems.append(ChainProblem(row.seq, f"expected event #{expected_seq} here"))
            expected_seq = row.seq
        if row.prev_hash != expected_prev:
            problems.append(ChainProblem(row.seq, "does not follow the event before it"))
        if row.row_hash not in {row_hash(row, key) for key in keys}:
            problems.append(ChainProblem(row.seq, "content does not match its hash"))
        problems.extend(_check_personal(row, keys))
        if subscriber_email_key is not None and row.email_digest not in {
            email_digest(subscriber_email_key, key) for key in keys
        }:
            problems.append(ChainProblem(row.seq, "attributed to another subscriber"))
        expected_prev, expected_seq = row.row_hash, expected_seq + 1

    table = LedgerHead.__table__
    head = db.session.execute(select(table.c.seq, table.c.row_hash).where(table.c.id == 1)).first()
    head_seq, head_hash = (head.seq, head.row_hash) if head else (0, GENESIS_HASH)
    if (head_seq, head_hash) != (expected_seq - 1, expected_prev):
        problems.append(
            ChainProblem(head_seq, "the ledger head names an event that is missing or changed")
        )
    return ChainReport(events=count, problems=problems, head_seq=head_seq, head_hash=head_hash)


def _stream_events(batch_size: int) -> Iterator[tuple[ConsentEvent, str | None]]:
    """All events in chain order with their subscriber's current address key.

    ``populate_existing``: events the session already holds are overwritten
    with what the database says, so verify checks the stored rows, never a
    stale copy in the identity map.
    """
    query = (
        select(ConsentEvent, Subscriber.email_key)
        .outerjoin(Subscriber, Subscriber.id == ConsentEvent.subscriber_id)
        .order_by(ConsentEvent.seq)
        .execution_options(yield_per=batch_size, populate_existing=True)
    )
    for row, email_key in db.session.execute(query):
        yield row, email_key
        db.session.expunge(row)


def _check_personal(row: ConsentEvent, keys: list[bytes]) -> list[ChainProblem]:
    """Personal fields must match their digest, unless erased (all NULL)."""
    personal = {name: getattr(row, name) for name in PERSONAL_FIELDS}
    if all(value is None for value in personal.values()):
        return []  # erased: the stored digest stands in for them
    if row.personal_digest in {personal_digest(personal, key) for key in keys}:
        return []
    return [ChainProblem(row.seq, "personal fields do not match their digest")]
