"""The append-only consent ledger: consent events, and the Merkle tree that seals them.

Events are leaves of an RFC 6962 Merkle tree (leaf index = ``seq`` - 1). The
tree is stored as the hashes of its complete subtrees, and each sealed size
has a signed checkpoint (see ``newsletter.ledger``).
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Date, ForeignKey, LargeBinary, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .types import UTCDateTime, utcnow


class ConsentEventType(enum.StrEnum):
    """What happened to someone's consent."""

    REQUESTED = "requested"
    CONFIRMED = "confirmed"
    WITHDRAWN = "withdrawn"
    IMPORTED = "imported"
    ERASED = "erased"
    SUPPRESSED = "suppressed"
    PREFERENCES_CHANGED = "preferences_changed"


class Channel(enum.StrEnum):
    """How the event reached us: part of the evidence."""

    FORM = "form"
    API = "api"
    CONFIRM_LINK = "confirm_link"
    ONE_CLICK = "one_click"
    UNSUBSCRIBE_PAGE = "unsubscribe_page"
    MANAGE_PAGE = "manage_page"
    STAFF = "staff"
    IMPORT = "import"
    SYSTEM = "system"
    COMPLAINT = "complaint"  # a spam complaint (ARF report or a provider's webhook)


class ConsentEvent(db.Model):  # type: ignore[name-defined]
    """One consent event: a leaf of the ledger's Merkle tree once sealed.

    Personal fields (email, ip, user_agent, source_url) enter the leaf only
    through ``personal_commitment``, a SHA-256 over a random per-event ``salt``
    and the fields; erasure nulls the fields and the salt together and keeps
    the commitment, so the leaf still verifies and links to no one.
    """

    __tablename__ = "consent_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(unique=True)
    # When it happened: a signup's events carry the request's time, though the
    # worker appends them later, so ``seq`` order is not time order. Indexed
    # for windows by time (the dashboard's last 90 days).
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    event: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(32))
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL"), index=True
    )
    list_id: Mapped[int | None] = mapped_column(ForeignKey("lists.id"))
    consent_text_id: Mapped[int | None] = mapped_column(ForeignKey("consent_texts.id"))
    # The privacy policy in force when the event happened. NULL on
    # events from before policy versions existed, or while none is imported.
    # The leaf binds the version and the SHA-256 of its text (ledger/leaf.py).
    policy_version_id: Mapped[int | None] = mapped_column(ForeignKey("privacy_policies.id"))
    # Keyed pseudonym of the address: survives erasure so a disputed address
    # can still be matched, but reveals nothing without the ledger key.
    email_digest: Mapped[str] = mapped_column(String(64), index=True)
    email: Mapped[str | None] = mapped_column(String(320))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    source_url: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Hex of 32 random bytes; NULL once erased (or on an event migrated erased).
    salt: Mapped[str | None] = mapped_column(String(64))
    # SHA-256(salt || JCS(personal fields)) as hex; NULL only on events that
    # were already erased when the ledger became a Merkle tree.
    personal_commitment: Mapped[str | None] = mapped_column(String(64))


class LedgerHead(db.Model):  # type: ignore[name-defined]
    """The single row naming the last event appended: appends lock it.

    Locking one row serialises appends, so ``seq`` has no gaps and no
    duplicates, and sealing can tell a missing event from one not yet written.
    """

    __tablename__ = "ledger_head"

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(default=0)


class LedgerTree(db.Model):  # type: ignore[name-defined]
    """The single row describing the sealed tree: sealing locks it.

    ``size`` leaves (events ``seq`` 1..size) are sealed, with root ``root_hash``
    (hex). ``origin`` names the log in its checkpoints and never changes once
    set. ``verified_size`` is where the last successful ``ledger verify`` got
    to, so that an incremental run starts there.
    """

    __tablename__ = "ledger_tree"

    id: Mapped[int] = mapped_column(primary_key=True)
    origin: Mapped[str] = mapped_column(String(200))
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    root_hash: Mapped[str] = mapped_column(String(64))
    sealed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    verified_size: Mapped[int] = mapped_column(BigInteger, default=0)


class LedgerNode(db.Model):  # type: ignore[name-defined]
    """The hash of a complete subtree: node (level, idx) covers leaves
    [idx * 2**level, (idx + 1) * 2**level); level 0 holds the leaf hashes.

    Only complete subtrees are stored, so rows are never updated, and any
    inclusion or consistency proof folds from O(log n) of them.
    """

    __tablename__ = "ledger_nodes"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LedgerCheckpoint(db.Model):  # type: ignore[name-defined]
    """A signed checkpoint (C2SP tlog-checkpoint in a signed note) of one tree size.

    ``logged_at`` is set once the note is appended to LEDGER_CHECKPOINT_LOG;
    ``mailed_on`` once it went to LEDGER_WITNESS_MAILTO (one a day).
    """

    __tablename__ = "ledger_checkpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger, unique=True)
    root_hash: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text)
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    logged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    mailed_on: Mapped[date | None] = mapped_column(Date)


class LedgerKey(db.Model):  # type: ignore[name-defined]
    """A verifier key that has signed checkpoints (C2SP signed-note vkey).

    Kept after a key is rotated out, so old checkpoints still verify.
    """

    __tablename__ = "ledger_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    vkey: Mapped[str] = mapped_column(String(400), unique=True)
    first_used_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
