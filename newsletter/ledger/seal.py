"""Sealing: waiting events become leaves of the Merkle tree under a signed checkpoint.

Appends only give events their ``seq``; sealing (by the worker, at most
LEDGER_SEAL_INTERVAL seconds later, or ``newsletter ledger seal``) turns the
events after the sealed size into leaves in ``seq`` order, stores every
subtree they complete, and signs a checkpoint of the new size and root. One
seal is one transaction holding the tree row's lock, so sealers take turns
and appends never wait for them.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from newsletter_verify import EMPTY_ROOT, leaf_hash, parse_note, parse_vkey, verify_note

from ..bulk import bulk_insert
from ..database import allow_long_statements
from ..extensions import db
from ..models import (
    ConsentEvent,
    LedgerCheckpoint,
    LedgerHead,
    LedgerKey,
    LedgerNode,
    LedgerTree,
    utcnow,
)
from ..transaction import unit_of_work
from . import merkle
from .keyring import log_origin, signer
from .leaf import LEAF_COLUMNS, Texts, leaf_bytes
from .proofs import edge_hashes
from .witness import log_checkpoints

log = logging.getLogger(__name__)

# Events sealed per transaction (and per checkpoint) when many are waiting.
SEAL_BATCH = 20_000


class LedgerBroken(Exception):
    """The stored events cannot be sealed as they are: one is missing."""


@dataclass(frozen=True)
class Sealed:
    """What one seal did: how many events it added and the checkpoint it signed."""

    added: int
    size: int
    note: str


def checkpoint_body(origin: str, size: int, root: bytes) -> str:
    """The C2SP tlog-checkpoint body: origin, tree size, base64 root hash."""
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


def seal(limit: int = SEAL_BATCH) -> Sealed:
    """Seal up to ``limit`` waiting events and sign a checkpoint; commits.

    With nothing waiting, returns the latest checkpoint (signing the empty
    tree's on the very first call). Raises ``LedgerBroken`` when an event
    between the sealed size and the ledger head is missing, or when the stored
    nodes the new leaves join no longer fold to the sealed root.
    """
    with unit_of_work():
        allow_long_statements()
        tree = _lock_tree()
        latest = _latest_note(tree.size)
        head = db.session.scalar(select(LedgerHead.seq).where(LedgerHead.id == 1)) or 0
        if head < tree.size:
            raise LedgerBroken(
                f"the ledger head names event #{head}, but #{tree.size} events are sealed"
            )
        end = min(head, tree.size + limit)
        if end == tree.size and latest is not None:
            latest = _cosign(tree.size, latest)
            log_checkpoints()
            return Sealed(0, tree.size, latest)
        leaves = _leaf_hashes(tree.size, end)
        edge = edge_hashes(tree.size)
        if edge is None:
            raise LedgerBroken(f"the stored tree of {tree.size} events lacks a node")
        if merkle.root(edge).hex() != tree.root_hash:  # never sign on top of a changed node
            raise LedgerBroken(
                f"the stored tree of {tree.size} events no longer hashes to its root: "
                "run `newsletter ledger verify`"
            )
        nodes, edge = merkle.append(edge, tree.size, leaves)
        bulk_insert(
            LedgerNode.__table__,
            [{"level": level, "idx": idx, "hash": digest} for level, idx, digest in nodes],
        )
        root = merkle.root(edge) if end else EMPTY_ROOT
        note = _sign(tree.origin, end, root)
        tree.size, tree.root_hash, tree.sealed_at = end, root.hex(), utcnow()
        log_checkpoints()
    return Sealed(len(leaves), end, note)


def seal_waiting() -> list[Sealed]:
    """Seal every event waiting now, a batch per checkpoint."""
    done = [seal()]
    while done[-1].added == SEAL_BATCH:
        done.append(seal())
    return done


def seal_due(interval: float, now: datetime | None = None) -> bool:
    """True when events wait and the last seal is at least ``interval`` seconds old.

    The worker passes half of LEDGER_SEAL_INTERVAL and looks at least once a
    second, so no event waits longer than the whole interval.
    """
    head = db.session.scalar(select(LedgerHead.seq).where(LedgerHead.id == 1)) or 0
    tree = db.session.execute(select(LedgerTree.size, LedgerTree.sealed_at)).first()
    if tree is None:
        return True
    if head <= tree.size:
        return False
    now = now or utcnow()
    return tree.sealed_at is None or now - tree.sealed_at >= timedelta(seconds=interval)


def _lock_tree() -> LedgerTree:
    """The tree row, locked until commit; created (empty, named) on first use.

    Sealers that start together on a new ledger both try to create it: the
    insert does nothing when another transaction made the row (PostgreSQL
    waits for that one to commit), and the row is then locked as usual.
    """
    tree = db.session.scalar(select(LedgerTree).where(LedgerTree.id == 1).with_for_update())
    if tree is None:
        insert_of = postgresql.insert if db.engine.dialect.name == "postgresql" else sqlite.insert
        db.session.execute(
            insert_of(LedgerTree)
            .values(id=1, origin=log_origin(), size=0, root_hash=EMPTY_ROOT.hex(), verified_size=0)
            .on_conflict_do_nothing(index_elements=[LedgerTree.id])
        )
        tree = db.session.scalar(select(LedgerTree).where(LedgerTree.id == 1).with_for_update())
        assert tree is not None
    return tree


def _latest_note(size: int) -> str | None:
    return db.session.scalar(select(LedgerCheckpoint.note).where(LedgerCheckpoint.size == size))


def _leaf_hashes(start: int, end: int) -> list[bytes]:
    """The leaf hashes of events ``seq`` start+1 .. end, which must all exist."""
    texts = Texts.load()
    rows = db.session.execute(
        select(*LEAF_COLUMNS)
        .where(ConsentEvent.seq > start, ConsentEvent.seq <= end)
        .order_by(ConsentEvent.seq)
    ).mappings()
    hashes = []
    for expected, row in enumerate(rows, start + 1):
        if row["seq"] != expected:
            raise LedgerBroken(f"event #{expected} is missing")
        hashes.append(leaf_hash(leaf_bytes(row, texts)))
    if len(hashes) != end - start:
        raise LedgerBroken(f"event #{start + len(hashes) + 1} is missing")
    return hashes


def _sign(origin: str, size: int, root: bytes) -> str:
    """Sign and store the checkpoint of ``size`` leaves; record the key once."""
    key = signer()
    note = key.sign_note(checkpoint_body(origin, size, root))
    _record_key(key.vkey)
    db.session.add(LedgerCheckpoint(size=size, root_hash=root.hex(), note=note))
    db.session.flush()
    return note


def _record_key(vkey: str) -> None:
    """Keep a verifier key that signs checkpoints (once)."""
    if not db.session.scalar(select(func.count()).where(LedgerKey.vkey == vkey)):
        db.session.add(LedgerKey(vkey=vkey))


def _cosign(size: int, note: str) -> str:
    """The checkpoint of ``size`` with the current key's signature: after the
    key was rotated, the newest checkpoint gets a second signature line (a
    signed note may carry several), so that it verifies with the key GET
    /ledger/key now serves; the note is logged again with it."""
    key = signer()
    if verify_note(parse_note(note), parse_vkey(key.vkey)):
        return note
    body = parse_note(note).body
    cosigned = note + key.sign_note(body)[len(body) + 1 :]
    _record_key(key.vkey)
    db.session.execute(
        update(LedgerCheckpoint)
        .where(LedgerCheckpoint.size == size)
        .values(note=cosigned, logged_at=None)
    )
    return cosigned


def latest_checkpoint() -> LedgerCheckpoint | None:
    """The newest signed checkpoint, if any."""
    return db.session.scalar(select(LedgerCheckpoint).order_by(LedgerCheckpoint.size.desc()))
