"""Proof generation for an RFC 9162 Merkle tree stored as complete aligned subtrees.

A stored node (level, idx) is the root of the complete subtree over leaves
[idx * 2**level, (idx + 1) * 2**level); level 0 nodes are leaf hashes. Only
complete subtrees are stored, and each is final once written, so a tree of
any past size is found in the same table. Every proof element is the fold of
a few stored nodes (see `cover` and `range_hash`), so an inclusion or consistency
proof reads O(log n) nodes. Pure functions: the database code fetches the
nodes a plan names and calls `prove`. Verification lives in newsletter_verify.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from newsletter_verify import EMPTY_ROOT, node_hash

Node = tuple[int, int]  # (level, idx)
Plan = list[list[Node]]


def _largest_power_below(n: int) -> int:
    """The largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def cover(a: int, b: int) -> list[Node]:
    """The aligned complete subtrees covering leaves [a, b), left to right, largest first.

    For a range that appears in the RFC 9162 recursion (a a multiple of the
    power of two at or above b - a, or a == 0), `range_hash` of their hashes is the
    RFC hash of the range.
    """
    if not 0 <= a <= b:
        raise ValueError(f"cover: bad range [{a}, {b})")
    nodes = []
    while a < b:
        level = (b - a).bit_length() - 1
        if a:
            level = min(level, (a & -a).bit_length() - 1)
        nodes.append((level, a >> level))
        a += 1 << level
    return nodes


def range_hash(hashes: Sequence[bytes]) -> bytes:
    """Fold subtree hashes right to left: h0, h1, h2 -> node(h0, node(h1, h2)); [] -> EMPTY_ROOT."""
    if not hashes:
        return EMPTY_ROOT
    result = hashes[-1]
    for h in reversed(hashes[:-1]):
        result = node_hash(h, result)
    return result


def right_edge(size: int) -> list[Node]:
    """The complete subtrees whose fold is the root of a tree of `size` leaves (one per set bit)."""
    return cover(0, size)


def root(edge_hashes: Sequence[bytes]) -> bytes:
    """The tree root from the hashes of `right_edge(size)`, in that order."""
    return range_hash(edge_hashes)


def append(
    edge_hashes: Sequence[bytes], size: int, leaf_hashes: Iterable[bytes]
) -> tuple[list[tuple[int, int, bytes]], list[bytes]]:
    """Append leaf hashes to a tree of `size` leaves whose right edge has `edge_hashes`.

    Returns every newly completed subtree as (level, idx, hash), the leaves
    themselves included at level 0, in the order they complete, and the new
    right edge's hashes.
    """
    edge = right_edge(size)
    if len(edge) != len(edge_hashes):
        raise ValueError(f"append: a tree of {size} leaves has {len(edge)} edge hashes")
    stack = [(level, idx, h) for (level, idx), h in zip(edge, edge_hashes, strict=True)]
    new: list[tuple[int, int, bytes]] = []
    for leaf in leaf_hashes:
        node = (0, size, leaf)
        size += 1
        new.append(node)
        while stack and stack[-1][0] == node[0]:
            left = stack.pop()
            node = (node[0] + 1, left[1] >> 1, node_hash(left[2], node[2]))
            new.append(node)
        stack.append(node)
    return new, [h for _, _, h in stack]


def inclusion_plan(index: int, size: int) -> Plan:
    """The RFC 9162 inclusion proof of leaf `index` in a tree of `size`, as stored nodes.

    Element i of the proof is the fold of the nodes in plan[i]; the proof
    runs from the leaf's sibling up to the root's other child.
    """
    if not 0 <= index < size:
        raise ValueError(f"inclusion_plan: index {index} is not in a tree of {size}")
    ranges = []  # PATH(m, D[a:b]) of RFC 9162 section 2.1.3.1, top down
    a, b = 0, size
    while b - a > 1:
        k = _largest_power_below(b - a)
        if index < a + k:
            ranges.append((a + k, b))
            b = a + k
        else:
            ranges.append((a, a + k))
            a += k
    return [cover(lo, hi) for lo, hi in reversed(ranges)]


def consistency_plan(size1: int, size2: int) -> Plan:
    """The RFC 9162 consistency proof from size1 to size2 (0 < size1 <= size2), as stored nodes.

    Element i of the proof is the fold of the nodes in plan[i]. Equal sizes
    give an empty proof.
    """
    if not 0 < size1 <= size2:
        raise ValueError(f"consistency_plan: no proof from size {size1} to {size2}")
    ranges = []  # SUBPROOF(m, D[a:b], start) of RFC 9162 section 2.1.4.1, top down
    m, a, b, start = size1, 0, size2, True
    while m != b - a:
        k = _largest_power_below(b - a)
        if m <= k:
            ranges.append((a + k, b))
            b = a + k
        else:
            ranges.append((a, a + k))
            m, a, start = m - k, a + k, False
    if not start:
        ranges.append((a, b))
    return [cover(lo, hi) for lo, hi in reversed(ranges)]


def plan_nodes(plan: Plan) -> set[Node]:
    """Every stored node a plan reads (to fetch them in one query)."""
    return {node for group in plan for node in group}


def prove(plan: Plan, hashes: Mapping[Node, bytes]) -> list[bytes]:
    """The proof: for each element of the plan, the fold of its nodes' hashes.

    KeyError names a node the mapping lacks.
    """
    return [range_hash([hashes[node] for node in group]) for group in plan]
