"""`newsletter ledger verify`: recompute every leaf, node and checkpoint from the rows.

A full run starts from the empty tree; an incremental run starts from the
checkpoint the last successful run reached (its stored edge nodes must hash to
that checkpoint's signed root) and checks only what was sealed since. Either
way every problem is reported with where it is, and nothing stops at the first.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, select, update

from newsletter_verify import Note
from newsletter_verify import leaf_hash as hash_leaf

from ..database import allow_long_statements
from ..extensions import db
from ..models import ConsentEvent, LedgerHead, LedgerNode, LedgerTree, Subscriber
from ..transaction import unit_of_work
from . import merkle
from .append import PERSONAL_FIELDS
from .checkpoints import LedgerReport, Problem, check_since, checkpoint_roots
from .keys import commitment, email_digest, ledger_keys
from .leaf import LEAF_COLUMNS, Texts, leaf_bytes
from .proofs import edge_hashes

__all__ = ["LedgerReport", "Problem", "verify_ledger"]

CHUNK = 10_000


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
    start = tree.verified_size if (tree and incremental) else 0
    checked = LedgerReport()
    roots = checkpoint_roots(tree, checked, start)
    if start and start not in roots:  # its start no longer holds: from the empty tree
        start, checked = 0, LedgerReport()
        roots = checkpoint_roots(tree, checked, 0)
    report.checkpoints = checked.checkpoints
    report.problems += checked.problems
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
        report.problems += check_since(note, tree)
    db.session.rollback()
    if report.ok and tree is not None:
        with unit_of_work():
            db.session.execute(update(LedgerTree).values(verified_size=size))
    return report


def _head() -> int:
    return db.session.scalar(select(LedgerHead.seq).where(LedgerHead.id == 1)) or 0


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
    check = _EventCheck(ledger_keys())
    chunk: list[tuple[int, bytes, bytes | None]] = []
    for row in _events(walk.size):
        report.events += 1
        seq = row["seq"]
        if seq != expected:
            report.problems.append(Problem(f"event #{expected}", "missing"))
        expected = seq + 1
        report.problems += check(row)
        if seq <= sealed:
            if chunk and chunk[-1][0] != seq - 1:  # a gap: fold what came before it
                _fold(walk, chunk, report)
                chunk = []
            chunk.append((seq, hash_leaf(leaf_bytes(row, texts)), row["stored_leaf"]))
            if len(chunk) == CHUNK:
                _fold(walk, chunk, report)
                chunk = []
    _fold(walk, chunk, report)
    return expected - 1


def _fold(walk: _Walk, chunk: list[tuple[int, bytes, bytes | None]], report: LedgerReport) -> None:
    """Add a run of consecutive leaves to the rebuilt tree; compare every node
    it completes with the stored one (one query a level) and each checkpoint
    root it reaches.

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
    end = walk.size + len(leaves)
    stops = sorted(size for size in walk.roots if walk.size < size < end)
    nodes: list[tuple[int, int, bytes]] = []
    for stop in [*stops, end]:
        made, walk.edge = merkle.append(walk.edge, walk.size, leaves[: stop - walk.size])
        leaves = leaves[stop - walk.size :]
        nodes += made
        walk.size = stop
        root = walk.roots.pop(stop, None)
        if root is not None and merkle.root(walk.edge) != root:
            report.problems.append(
                Problem(
                    f"checkpoint {stop}",
                    "its signed root does not match the events: one of the first "
                    f"{stop} was changed, removed or moved after it was signed",
                )
            )
    _compare_nodes([node for node in nodes if node[0] > 0], report)


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
    yield from db.session.connection().execute(query).mappings()


class _EventCheck:
    """The personal fields must match their commitment (unless erased together
    with the salt), and the event must still belong to its subscriber."""

    def __init__(self, keys: list[bytes]) -> None:
        self.keys = keys

    def __call__(self, row: Mapping[Any, Any]) -> list[Problem]:
        """The problems of one event row (usually none)."""
        where = f"event #{row['seq']}"
        found = []
        personal = {name: row[name] for name in PERSONAL_FIELDS if name != "salt"}
        if row["salt"] is None:
            if any(value is not None for value in personal.values()):
                found.append(Problem(where, "personal fields without their salt"))
        elif commitment(_salt(row["salt"]), personal) != row["personal_commitment"]:
            found.append(Problem(where, "personal fields do not match their commitment"))
        email_key = row["email_key"]
        if email_key is not None and all(
            row["email_digest"] != email_digest(email_key, key) for key in self.keys
        ):
            found.append(Problem(where, "attributed to another subscriber"))
        return found


def _salt(text: str) -> bytes:
    """A stored salt as bytes; one that is not hex (edited) commits to nothing."""
    try:
        return bytes.fromhex(text)
    except ValueError:
        return b""
