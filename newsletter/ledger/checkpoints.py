"""Checking signed checkpoints: the stored ones, and those kept outside the database."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select

from newsletter_verify import (
    EMPTY_ROOT,
    Note,
    Verifier,
    parse_checkpoint,
    parse_note,
    parse_vkey,
    verify_note,
)

from ..extensions import db
from ..models import LedgerCheckpoint, LedgerKey, LedgerTree
from .proofs import prove_consistency


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


def checkpoint_roots(
    tree: LedgerTree | None, report: LedgerReport, from_size: int = 0
) -> dict[int, bytes]:
    """Every stored checkpoint of at least ``from_size`` events whose
    signature holds, as size -> root; each one that does not is reported.

    A checkpoint beyond the tree size read is left to the next run when a seal
    committed it meanwhile (the tree row has grown since); otherwise it names
    events the tree lacks and is reported.
    """
    verifiers = ledger_verifiers(report)
    roots: dict[int, bytes] = {}
    rows = db.session.scalars(
        select(LedgerCheckpoint)
        .where(LedgerCheckpoint.size >= from_size)
        .order_by(LedgerCheckpoint.size)
    )
    for row in rows:
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


def ledger_verifiers(report: LedgerReport | None = None) -> list[Verifier]:
    """The ledger's verifier keys; an unreadable one is named (once) and skipped."""
    verifiers = []
    for vkey in db.session.scalars(select(LedgerKey.vkey).order_by(LedgerKey.id)):
        try:
            verifiers.append(parse_vkey(vkey))
        except ValueError as exc:
            if report is not None:
                report.problems.append(Problem("ledger keys", f"unreadable key: {exc}"))
    return verifiers


def check_since(note: Note, tree: LedgerTree | None) -> list[Problem]:
    """A checkpoint kept elsewhere: signed by one of our keys, for this log,
    and extended by today's tree (a consistency proof from the stored nodes)."""
    where = "checkpoint file"
    if not any(verify_note(note, verifier) for verifier in ledger_verifiers()):
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
