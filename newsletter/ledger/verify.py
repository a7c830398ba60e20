"""`newsletter ledger verify`: recompute every leaf, node and checkpoint from the rows.

A full run starts from the empty tree; an incremental run starts from the
checkpoint the last successful run reached (its stored edge nodes must hash to
that checkpoint's signed root) and checks only what was sealed since. Either
way every problem is reported with where it is, and nothing stops at the first.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, select, update

from newsletter_verify import (
    EMPTY_ROOT,
    Note,
    Verifier,
    parse_checkpoint,
    parse_note,
    parse_vkey,
    verify_note,
)
from newsletter_verify import leaf_hash as hash_leaf

from ..database import allow_long_statements
from ..extensions import db
from ..models import (
    ConsentEvent,
    LedgerCheckpoint,
    LedgerHead,
    LedgerKey,
    LedgerNode,
    LedgerTree,
    Subscriber,
)
from ..transaction import unit_of_work
from . import merkle
from .append import PERSONAL_FIELDS
from .keys import commitment, email_digests
from .leaf import LEAF_COLUMNS, Texts, leaf_bytes
from .proofs import edge_hashes, prove_consistency

CHUNK = 10_000


@dataclass(frozen=True)
class Problem:
    """One thing that does not hold: where, and what is wrong."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class LedgerReport:
    """What a verification checked and found."""

    events: int = 0
    sealed: int = 0
    waiting: int = 0
    checkpoints: int = 0
    start: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


@dataclass
class _Walk:
    """The tree being rebuilt as the events stream past."""

    size: int
    edge: list[bytes]
    roots: dict[int, bytes]  # checkpoint size -> signed root, still to reach


def verify_ledger(incremental: bool = False, since: Sequence[Note] = ()) -> LedgerReport:
    """Verify the ledger (see the module docstring); ``since`` are checkpoints
    kept outside the database, each of which today's tree must extend."""
    allow_long_statements()
    report = LedgerReport()
    texts = Texts.load()
    report.problems += [Problem("texts", reason) for reason in texts.changed()]
    tree = db.session.execute(select(LedgerTree)).scalar_one_or_none()
    head = _head()
    size = tree.size if tree else 0
    report.sealed, report.waiting = size, max(head - size, 0)
    roots = _checkpoint_roots(tree, report)
    start = tree.verified_size if (tree and incremental and tree.verified_size in roots) else 0
    walk = _start(start, roots, report)
    report.start = walk.size
    last = _walk_events(walk, texts, size, report)
    if last < head:
        report.problems.append(
            Problem(f"event #{last + 1}", f"missing (the ledger head names event #{head})")
        )
    elif last > _head():  # the next append would take a seq in use
        # (read again: appends committed while the events were read moved it)
        report.problems.append(
            Problem("ledger head", f"names event #{_head()}, but the events go on to #{last}")
        )
    if walk.roots:
        report.problems.append(
            Problem(f"checkpoint {min(walk.roots)}", "names events that are missing")
        )
    for note in since:  # with no tree row at all, today's log is the empty tree
        report.problems += _check_since(note, tree)
    db.session.rollback()
    if report.ok and tree is not None:
        with unit_of_work():
            db.session.execute(update(LedgerTree).values(verified_size=size))
    return report


def _head() -> int:
    return db.session.scalar(select(LedgerHead.seq).where(LedgerHead.id == 1)) or 0


def _checkpoint_roots(tree: LedgerTree | None, report: LedgerReport) -> dict[int, bytes]:
    """Every stored checkpoint whose signature holds, as size -> root.

    A checkpoint beyond the tree size read is left to the next run when a seal
    committed it meanwhile (the tree row has grown since); otherwise it names
    events the tree lacks and is reported.
    """
    verifiers = _verifiers(report)
    roots: dict[int, bytes] = {}
    for row in db.session.scalars(select(LedgerCheckpoint).order_by(LedgerCheckpoint.size)):
        report.checkpoints += 1
        where = f"checkpoint {row.size}"
        try:
            note = parse_note(row.note)
            body = parse_checkpoint(note.body)
        except ValueError as exc:
            report.problems.append(Problem(where, f"unreadable: {exc}"))
            continue
        if not any(verify_note(note, verifier) for verifier in verifiers):
            report.problems.append(Problem(where, "its signature does not verify"))
        elif tree is not None and body.origin != tree.origin:
            report.problems.append(Problem(where, f"names another log ({body.origin})"))
        elif (body.size, body.root.hex()) != (row.size, row.root_hash):
            report.problems.append(Problem(where, "its signed size or root differs from its row"))
        else:
            roots[row.size] = body.root
    beyond = [size for size in roots if size > (tree.size if tree else 0)]
    if beyond and max(beyond) <= (db.session.scalar(select(LedgerTree.size)) or 0):
        for size in beyond:
            del roots[size]
    if tree is not None and roots.get(tree.size, b"").hex() != tree.root_hash:
        report.problems.append(
            Problem("tree", f"no valid signed checkpoint of the sealed size {tree.size}")
        )
    return roots


def _start(start: int, roots: dict[int, bytes], report: LedgerReport) -> _Walk:
    """The rebuilt tree at ``start``: empty, or the stored edge of the last
    verified checkpoint if it still hashes to that checkpoint's signed root."""
    pending = {size: root for size, root in roots.items() if size > start}
    if start == 0:
        return _Walk(0, [], pending)
    edge = edge_hashes(start)
    if edge is None or merkle.root(edge) != roots[start]:
        report.problems.append(
            Problem(
                f"checkpoint {start}",
                "the stored tree no longer matches it: run a full `ledger verify`",
            )
        )
    return _Walk(start, edge or [], pending)


def _walk_events(walk: _Walk, texts: Texts, sealed: int, report: LedgerReport) -> int:
    """Check each event after ``walk.size`` and rebuild the tree; returns the last seq."""
    expected = walk.size + 1
    chunk: list[tuple[int, bytes, bytes | None]] = []
    for row in _events(walk.size):
        report.events += 1
        seq = row["seq"]
        if seq != expected:
            report.problems.append(Problem(f"event #{expected}", "missing"))
        expected = seq + 1
        report.problems += _check_event(row)
        if seq <= sealed:
            if chunk and chunk[-1][0] != seq - 1:  # a gap: fold what came before it
                _fold(walk, chunk, report)
                chunk = []
            chunk.append((seq, hash_leaf(leaf_bytes(row, texts)), row["stored_leaf"]))
            if len(chunk) == CHUNK or seq in walk.roots:
                _fold(walk, chunk, report)
                chunk = []
    _fold(walk, chunk, report)
    return expected - 1


def _fold(walk: _Walk, chunk: list[tuple[int, bytes, bytes | None]], report: LedgerReport) -> None:
    """Add a run of consecutive leaves to the rebuilt tree; compare every node
    it completes with the stored one and each checkpoint root it reaches.

    An event that no longer matches its stored leaf is named, and the tree
    goes on with the stored leaf, so that the nodes and roots above it are
    checked against the stored tree itself and each problem is named once
    (a stored leaf changed to match the event breaks the node above it).
    """
    if not chunk:
        return
    leaves = []
    for seq, leaf, stored in chunk:
        if stored is None:
            report.problems.append(Problem(f"event #{seq}", "sealed, but its leaf is not stored"))
        elif bytes(stored) != leaf:
            report.problems.append(
                Problem(
                    f"event #{seq}",
                    "does not match its sealed leaf: the event, its consent text "
                    "or its privacy policy was changed after it was sealed",
                )
            )
            leaf = bytes(stored)
        leaves.append(leaf)
    if chunk[0][0] != walk.size + 1:  # after a gap, go on from the stored tree
        walk.size = chunk[0][0] - 1
        walk.edge = edge_hashes(walk.size) or []
    nodes, walk.edge = merkle.append(walk.edge, walk.size, leaves)
    walk.size += len(chunk)
    _compare_nodes([node for node in nodes if node[0] > 0], report)
    root = walk.roots.pop(walk.size, None)
    if root is not None and merkle.root(walk.edge) != root:
        report.problems.append(
            Problem(
                f"checkpoint {walk.size}",
                "its signed root does not match the events: one of the first "
                f"{walk.size} was changed, removed or moved after it was signed",
            )
        )


def _compare_nodes(nodes: list[tuple[int, int, bytes]], report: LedgerReport) -> None:
    """The stored interior nodes must be the ones the leaves make."""
    by_level: dict[int, dict[int, bytes]] = {}
    for level, idx, digest in nodes:
        by_level.setdefault(level, {})[idx] = digest
    for level, wanted in by_level.items():
        stored = {
            row.idx: bytes(row.hash)
            for row in db.session.execute(
                select(LedgerNode.idx, LedgerNode.hash).where(
                    LedgerNode.level == level,
                    LedgerNode.idx >= min(wanted),
                    LedgerNode.idx <= max(wanted),
                )
            )
        }
        for idx, digest in wanted.items():
            if stored.get(idx) != digest:
                report.problems.append(
                    Problem(f"tree node {level}/{idx}", "missing or not the hash of its children")
                )


def _events(after: int) -> Iterator[Mapping[Any, Any]]:
    """Events after ``seq`` ``after`` in ``seq`` order, with their stored leaf
    hash, personal fields and their subscriber's current address key."""
    leaf = LedgerNode.__table__.alias("leaf")
    query = (
        select(
            *LEAF_COLUMNS,
            *(getattr(ConsentEvent, name) for name in PERSONAL_FIELDS),
            leaf.c.hash.label("stored_leaf"),
            Subscriber.email_key,
        )
        .outerjoin(leaf, and_(leaf.c.level == 0, leaf.c.idx == ConsentEvent.seq - 1))
        .outerjoin(Subscriber, Subscriber.id == ConsentEvent.subscriber_id)
        .where(ConsentEvent.seq > after)
        .order_by(ConsentEvent.seq)
        .execution_options(yield_per=CHUNK)
    )
    yield from db.session.execute(query).mappings()


def _check_event(row: Mapping[Any, Any]) -> list[Problem]:
    """The personal fields must match their commitment (unless erased together
    with the salt), and the event must still belong to its subscriber."""
    where = f"event #{row['seq']}"
    found = []
    personal = {name: row[name] for name in PERSONAL_FIELDS if name != "salt"}
    if row["salt"] is None:
        if any(value is not None for value in personal.values()):
            found.append(Problem(where, "personal fields without their salt"))
    elif commitment(_salt(row["salt"]), personal) != row["personal_commitment"]:
        found.append(Problem(where, "personal fields do not match their commitment"))
    if row["email_key"] is not None and row["email_digest"] not in email_digests(row["email_key"]):
        found.append(Problem(where, "attributed to another subscriber"))
    return found


def _salt(text: str) -> bytes:
    """A stored salt as bytes; one that is not hex (edited) commits to nothing."""
    try:
        return bytes.fromhex(text)
    except ValueError:
        return b""


def _verifiers(report: LedgerReport | None = None) -> list[Verifier]:
    """The ledger's verifier keys; an unreadable one is named (once) and skipped."""
    verifiers = []
    for vkey in db.session.scalars(select(LedgerKey.vkey).order_by(LedgerKey.id)):
        try:
            verifiers.append(parse_vkey(vkey))
        except ValueError as exc:
            if report is not None:
                report.problems.append(Problem("ledger keys", f"unreadable key: {exc}"))
    return verifiers


def _check_since(note: Note, tree: LedgerTree | None) -> list[Problem]:
    """A checkpoint kept elsewhere: signed by one of our keys, for this log,
    and extended by today's tree (a consistency proof from the stored nodes)."""
    where = "checkpoint file"
    if not any(verify_note(note, verifier) for verifier in _verifiers()):
        return [Problem(where, "not signed by any key of this ledger")]
    try:
        body = parse_checkpoint(note.body)
    except ValueError as exc:
        return [Problem(where, f"not a checkpoint: {exc}")]
    if tree is not None and body.origin != tree.origin:
        return [Problem(where, f"is for another log ({body.origin})")]
    size, root = (tree.size, bytes.fromhex(tree.root_hash)) if tree else (0, EMPTY_ROOT)
    where = f"checkpoint file (size {body.size})"
    if body.size > size:
        return [
            Problem(where, f"the log now holds only {size} sealed events: its tail was removed")
        ]
    if not prove_consistency(body.size, body.root, size, root):
        return [Problem(where, "today's tree does not extend it: the log's history was rewritten")]
    return []
