"""Inclusion and consistency proofs from the stored tree (O(log n) nodes each)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import tuple_

from newsletter_verify import EMPTY_ROOT, verify_consistency

from ..extensions import db
from ..models import LedgerNode
from . import merkle

Node = tuple[int, int]


def stored_nodes(nodes: Collection[Node]) -> dict[Node, bytes]:
    """The stored hashes of ``nodes`` that exist, in one query."""
    if not nodes:
        return {}
    rows = db.session.execute(
        db.select(LedgerNode.level, LedgerNode.idx, LedgerNode.hash).where(
            tuple_(LedgerNode.level, LedgerNode.idx).in_(list(nodes))
        )
    )
    return {(row.level, row.idx): bytes(row.hash) for row in rows}


def edge_hashes(size: int) -> list[bytes] | None:
    """The hashes of the complete subtrees a tree of ``size`` leaves ends in
    (see ``merkle.right_edge``); None when one is not stored."""
    wanted = merkle.right_edge(size)
    found = stored_nodes(wanted)
    if len(found) != len(wanted):
        return None
    return [found[node] for node in wanted]


def inclusion_proof(index: int, size: int) -> list[bytes]:
    """The RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size`` leaves."""
    plan = merkle.inclusion_plan(index, size)
    return merkle.prove(plan, stored_nodes(merkle.plan_nodes(plan)))


def inclusion_proofs(indexes: Sequence[int], size: int) -> list[list[bytes]]:
    """The inclusion proofs of several leaves in the tree of ``size`` leaves,
    from one query for all their nodes."""
    plans = [merkle.inclusion_plan(index, size) for index in indexes]
    hashes = stored_nodes(set().union(*(merkle.plan_nodes(plan) for plan in plans)))
    return [merkle.prove(plan, hashes) for plan in plans]


def consistency_proof(old_size: int, new_size: int) -> list[bytes]:
    """The RFC 9162 consistency proof from ``old_size`` leaves to ``new_size``."""
    plan = merkle.consistency_plan(old_size, new_size)
    return merkle.prove(plan, stored_nodes(merkle.plan_nodes(plan)))


def prove_consistency(old_size: int, old_root: bytes, new_size: int, new_root: bytes) -> bool:
    """True when the stored tree of ``new_size`` leaves (root ``new_root``)
    provably extends the one of ``old_size`` leaves with ``old_root``."""
    if old_size == 0:
        return old_root == EMPTY_ROOT
    try:
        proof = consistency_proof(old_size, new_size)
    except KeyError:  # a node the proof needs is not stored
        return False
    return verify_consistency(old_size, new_size, old_root, new_root, proof)
