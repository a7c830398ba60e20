"""RFC 6962 / RFC 9162 Merkle tree: proof plans (newsletter.ledger.merkle) and verification
(newsletter_verify) against published vectors and a naive recursive implementation."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.ledger import merkle
from newsletter_verify import (
    EMPTY_ROOT,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).parent / "data" / "ledger_vectors"

# RFC 6962 reference tree, copied (data only) from transparency-dev/merkle
# testonly/constants.go at 417fb0c314750d94e53942e9f92e79b6d35915db (Apache-2.0):
# LeafInputs(), NodeHashes() (level, index) and RootHashes() (by tree size).
LEAF_INPUTS = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
]
NODE_HASHES = [
    [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    [
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    ["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
]
ROOT_HASHES = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]

# Expected proof node IDs, copied (data only) from transparency-dev/merkle
# proof/proof_test.go (TestInclusion, TestConsistency) at the same commit. Go
# lists the nodes folded into one proof element in the slice [begin, end),
# bottom-up; `go_plan` turns them into this module's plan (groups left to right).
# (size, index, ids, begin, end)
GO_INCLUSION = [
    (1, 0, [], 0, 0),
    (2, 0, [(0, 1)], 0, 0),
    (2, 1, [(0, 0)], 0, 0),
    (3, 1, [(0, 0), (0, 2)], 1, 2),
    (7, 0, [(0, 1), (1, 1), (0, 6), (1, 2)], 2, 4),
    (7, 1, [(0, 0), (1, 1), (0, 6), (1, 2)], 2, 4),
    (7, 2, [(0, 3), (1, 0), (0, 6), (1, 2)], 2, 4),
    (7, 3, [(0, 2), (1, 0), (0, 6), (1, 2)], 2, 4),
    (7, 4, [(0, 5), (0, 6), (2, 0)], 1, 2),
    (7, 5, [(0, 4), (0, 6), (2, 0)], 1, 2),
    (7, 6, [(1, 2), (2, 0)], 0, 0),
    (4, 2, [(0, 3), (1, 0)], 0, 0),
    (5, 3, [(0, 2), (1, 0), (0, 4)], 2, 3),
    (6, 3, [(0, 2), (1, 0), (1, 2)], 2, 3),
    (6, 4, [(0, 5), (2, 0)], 0, 0),
    (15, 10, [(0, 11), (1, 4), (0, 14), (1, 6), (3, 0)], 2, 4),
    (31, 24, [(0, 25), (1, 13), (0, 30), (1, 14), (3, 2), (4, 0)], 2, 4),
    (95, 81, [(0, 80), (1, 41), (2, 21), (0, 94), (1, 46), (2, 22), (4, 4), (6, 0)], 3, 6),
]
# (size1, size2, ids, begin, end)
GO_CONSISTENCY = [
    (1, 2, [(0, 1)], 0, 0),
    (1, 4, [(0, 1), (1, 1)], 0, 0),
    (1, 6, [(0, 1), (1, 1), (1, 2)], 2, 3),
    (2, 3, [(0, 2)], 0, 1),
    (2, 8, [(1, 1), (2, 1)], 0, 0),
    (3, 7, [(0, 2), (0, 3), (1, 0), (0, 6), (1, 2)], 3, 5),
    (4, 7, [(0, 6), (1, 2)], 0, 2),
    (5, 7, [(0, 4), (0, 5), (0, 6), (2, 0)], 2, 3),
    (6, 7, [(1, 2), (0, 6), (2, 0)], 1, 2),
    (7, 8, [(0, 6), (0, 7), (1, 2), (2, 0)], 0, 0),
    (1, 1, [], 0, 0),
    (2, 2, [], 0, 0),
    (3, 3, [], 0, 0),
    (4, 4, [], 0, 0),
    (5, 5, [], 0, 0),
    (7, 7, [], 0, 0),
    (8, 8, [], 0, 0),
    (2, 4, [(1, 1)], 0, 0),
    (3, 5, [(0, 2), (0, 3), (1, 0), (0, 4)], 3, 4),
    (3, 6, [(0, 2), (0, 3), (1, 0), (1, 2)], 3, 4),
    (4, 6, [(1, 2)], 0, 1),
    (1, 7, [(0, 1), (1, 1), (0, 6), (1, 2)], 2, 4),
    (10, 15, [(1, 4), (1, 5), (0, 14), (1, 6), (3, 0)], 2, 4),
    (24, 31, [(3, 2), (0, 30), (1, 14), (2, 6), (4, 0)], 1, 4),
    (81, 95, [(0, 80), (0, 81), (1, 41), (2, 21), (0, 94), (1, 46), (2, 22), (4, 4), (6, 0)], 4, 7),
]


def go_plan(ids: list[tuple[int, int]], begin: int, end: int) -> merkle.Plan:
    """Go's Nodes (ids, rehash range) as a plan: one group per proof element."""
    if begin == end:
        return [[node] for node in ids]
    return (
        [[node] for node in ids[:begin]]
        + [list(reversed(ids[begin:end]))]
        + [[node] for node in ids[end:]]
    )


def b64(text: str | None) -> bytes:
    return base64.b64decode(text or "")


# -- a naive recursive RFC 9162 section 2.1 implementation over lists of leaf hashes


def split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves: list[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = split(len(leaves))
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    if len(leaves) == 1:
        return []
    k = split(len(leaves))
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


def subproof(m: int, leaves: list[bytes], complete: bool) -> list[bytes]:
    if m == len(leaves):
        return [] if complete else [mth(leaves)]
    k = split(len(leaves))
    if m <= k:
        return [*subproof(m, leaves[:k], complete), mth(leaves[k:])]
    return [*subproof(m - k, leaves[k:], False), mth(leaves[:k])]


def build(leaves: list[bytes], chunks: list[int] | None = None):
    """All stored nodes and the right edge, appending the leaves in the given chunk sizes."""
    nodes: dict[tuple[int, int], bytes] = {}
    edge: list[bytes] = []
    size = 0
    for chunk in chunks or [len(leaves)]:
        new, edge = merkle.append(edge, size, leaves[size : size + chunk])
        for level, idx, h in new:
            assert (level, idx) not in nodes
            nodes[(level, idx)] = h
        size = min(size + chunk, len(leaves))
    return nodes, edge


def flip(data: bytes, bit: int) -> bytes:
    bit %= len(data) * 8
    return data[: bit // 8] + bytes([data[bit // 8] ^ (1 << bit % 8)]) + data[bit // 8 + 1 :]


# -- published vectors


def test_reference_tree_nodes_and_roots():
    leaves = [leaf_hash(bytes.fromhex(x)) for x in LEAF_INPUTS]
    nodes, edge = build(leaves, [1, 2, 1, 3, 1])
    expected = {
        (level, idx): bytes.fromhex(h)
        for level, row in enumerate(NODE_HASHES)
        for idx, h in enumerate(row)
    }
    assert nodes == expected
    assert merkle.root(edge).hex() == ROOT_HASHES[8]
    for size, want in enumerate(ROOT_HASHES):
        assert merkle.range_hash([nodes[n] for n in merkle.right_edge(size)]).hex() == want
    assert EMPTY_ROOT.hex() == ROOT_HASHES[0]
    assert merkle.root([]) == EMPTY_ROOT


def test_go_sumdb_record_hash():
    # golang.org/x/mod sumdb/tlog note_test.go (TestFormatTree): RecordHash("hello world").
    assert base64.b64encode(leaf_hash(b"hello world")).decode() == (
        "TszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0="
    )


@pytest.mark.parametrize(("size", "index", "ids", "begin", "end"), GO_INCLUSION)
def test_inclusion_plan_matches_go(size, index, ids, begin, end):
    assert merkle.inclusion_plan(index, size) == go_plan(ids, begin, end)


@pytest.mark.parametrize(("size1", "size2", "ids", "begin", "end"), GO_CONSISTENCY)
def test_consistency_plan_matches_go(size1, size2, ids, begin, end):
    assert merkle.consistency_plan(size1, size2) == go_plan(ids, begin, end)


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 0), (2, 1), (3, 0), (8, 7), (-1, 4)])
def test_inclusion_plan_refuses_bad_positions(index, size):
    with pytest.raises(ValueError, match="inclusion_plan"):
        merkle.inclusion_plan(index, size)


@pytest.mark.parametrize(("size1", "size2"), [(5, 0), (9, 8), (0, 5), (0, 0)])
def test_consistency_plan_refuses_bad_sizes(size1, size2):
    with pytest.raises(ValueError, match="consistency_plan"):
        merkle.consistency_plan(size1, size2)


def probes(kind: str) -> list[dict]:
    return json.loads((VECTORS / f"{kind}.json").read_text())["probes"]


@pytest.mark.parametrize("probe", probes("inclusion"), ids=lambda p: p["file"])
def test_inclusion_probes(probe):
    ok = verify_inclusion(
        probe["leafIdx"],
        probe["treeSize"],
        b64(probe["leafHash"]),
        [b64(p) for p in probe["proof"] or []],
        b64(probe["root"]),
    )
    assert ok is not probe["wantErr"]


# Go's verifier accepts equal sizes with equal roots of any length; this one
# requires every hash to be 32 bytes, so it refuses "don't care" roots.
LENGTH_CHECKED = {"testdata/consistency/additional/sizes-are-equal-one-and-proof-is-empty.json"}


@pytest.mark.parametrize("probe", probes("consistency"), ids=lambda p: p["file"])
def test_consistency_probes(probe):
    ok = verify_consistency(
        probe["size1"],
        probe["size2"],
        b64(probe["root1"]),
        b64(probe["root2"]),
        [b64(p) for p in probe["proof"] or []],
    )
    assert ok is not (probe["wantErr"] or probe["file"] in LENGTH_CHECKED)


def test_equal_sizes_with_32_byte_roots():
    root = ROOT_HASHES[3]
    assert verify_consistency(3, 3, bytes.fromhex(root), bytes.fromhex(root), [])
    assert not verify_consistency(3, 3, bytes.fromhex(root), bytes.fromhex(ROOT_HASHES[4]), [])
    assert not verify_consistency(3, 3, bytes.fromhex(root), bytes.fromhex(root), [EMPTY_ROOT])


# -- small pieces


def test_cover_is_aligned_and_exact():
    assert merkle.cover(0, 7) == [(2, 0), (1, 2), (0, 6)]
    assert merkle.cover(5, 16) == [(0, 5), (1, 3), (3, 1)]
    assert merkle.cover(4, 4) == []
    for a in range(40):
        for b in range(a, 40):
            covered = []
            for level, idx in merkle.cover(a, b):
                covered.extend(range(idx << level, (idx + 1) << level))
            assert covered == list(range(a, b))
    with pytest.raises(ValueError, match="cover"):
        merkle.cover(3, 2)


def test_fold_is_right_to_left():
    a, b, c = (bytes([i]) * 32 for i in range(3))
    assert merkle.range_hash([a, b, c]) == node_hash(a, node_hash(b, c))
    assert merkle.range_hash([a]) == a


def test_append_refuses_an_edge_of_the_wrong_length():
    with pytest.raises(ValueError, match="edge hashes"):
        merkle.append([EMPTY_ROOT], 3, [EMPTY_ROOT])


def test_prove_names_a_missing_node():
    nodes, _ = build([leaf_hash(bytes([i])) for i in range(5)])
    del nodes[(1, 1)]
    with pytest.raises(KeyError):
        merkle.prove(merkle.inclusion_plan(0, 5), nodes)
    plan = merkle.inclusion_plan(0, 5)
    assert (1, 1) in merkle.plan_nodes(plan)


# -- properties


def leaves_of(seed: bytes, size: int) -> list[bytes]:
    return [leaf_hash(seed + i.to_bytes(4, "big")) for i in range(size)]


tree = st.tuples(st.binary(max_size=8), st.integers(1, 300))


@settings(deadline=None, max_examples=60)
@given(tree=tree, chunks=st.lists(st.integers(1, 64), max_size=12))
def test_append_stores_every_complete_subtree(tree, chunks):
    seed, size = tree
    leaves = leaves_of(seed, size)
    chunks = [*chunks, size]  # the last chunk takes the rest
    nodes, edge = build(leaves, chunks)
    assert merkle.root(edge) == mth(leaves)
    expected = {(level, idx) for level in range(size.bit_length()) for idx in range(size >> level)}
    assert set(nodes) == expected
    for level, idx in list(expected)[:40]:
        assert nodes[(level, idx)] == mth(leaves[idx << level : (idx + 1) << level])


@settings(deadline=None, max_examples=150)
@given(tree=tree, data=st.data())
def test_inclusion_proofs(tree, data):
    seed, size = tree
    leaves = leaves_of(seed, size)
    nodes, edge = build(leaves)
    root = merkle.root(edge)
    index = data.draw(st.integers(0, size - 1))
    proof = merkle.prove(merkle.inclusion_plan(index, size), nodes)
    assert proof == path(index, leaves)
    assert verify_inclusion(index, size, leaves[index], proof, root)
    if proof:
        bit = data.draw(st.integers(0, 256 * len(proof) - 1))
        bad = list(proof)
        bad[bit // 256] = flip(bad[bit // 256], bit)
        assert not verify_inclusion(index, size, leaves[index], bad, root)
        assert not verify_inclusion(index, size, leaves[index], proof[:-1], root)
    assert not verify_inclusion(index, size, flip(leaves[index], 7), proof, root)
    assert not verify_inclusion(index, size, leaves[index], proof, flip(root, 200))
    assert not verify_inclusion(index, size, leaves[index], [*proof, root], root)
    if size > 1:
        other = (index + data.draw(st.integers(1, size - 1))) % size
        assert not verify_inclusion(other, size, leaves[index], proof, root)
    assert not verify_inclusion(index, size + 1, leaves[index], proof, mth([*leaves, root]))
    if index < size - 1:
        assert not verify_inclusion(index, size - 1, leaves[index], proof, mth(leaves[:-1]))
    assert not verify_inclusion(size, size, leaves[index], proof, root)


@settings(deadline=None, max_examples=150)
@given(tree=tree, data=st.data())
def test_consistency_proofs(tree, data):
    seed, size2 = tree
    leaves = leaves_of(seed, size2)
    nodes, edge = build(leaves)
    root2 = merkle.root(edge)
    size1 = data.draw(st.integers(1, size2))
    root1 = merkle.range_hash([nodes[n] for n in merkle.right_edge(size1)])
    assert root1 == mth(leaves[:size1])
    proof = merkle.prove(merkle.consistency_plan(size1, size2), nodes)
    assert proof == subproof(size1, leaves, True)
    assert verify_consistency(size1, size2, root1, root2, proof)
    if proof:
        bit = data.draw(st.integers(0, 256 * len(proof) - 1))
        bad = list(proof)
        bad[bit // 256] = flip(bad[bit // 256], bit)
        assert not verify_consistency(size1, size2, root1, root2, bad)
        assert not verify_consistency(size1, size2, root1, root2, proof[:-1])
        assert not verify_consistency(size1, size2, flip(root1, 9), root2, proof)
        assert not verify_consistency(size1, size2, root1, flip(root2, 9), proof)
    assert not verify_consistency(size1, size2, root1, root2, [*proof, root1])
    if size1 > 1:
        smaller = mth(leaves[: size1 - 1])
        assert not verify_consistency(size1 - 1, size2, smaller, root2, proof)
    if size1 < size2:
        larger = mth(leaves[: size1 + 1])
        assert not verify_consistency(size1 + 1, size2, larger, root2, proof)
        assert not verify_consistency(size2, size1, root2, root1, proof)
        assert not verify_consistency(0, size2, EMPTY_ROOT, root2, proof)


@given(size=st.integers(1, 2**48), data=st.data())
def test_plans_read_a_logarithmic_number_of_nodes(size, data):
    index = data.draw(st.integers(0, size - 1))
    size1 = data.draw(st.integers(1, size))
    bound = 2 * size.bit_length()
    inclusion = merkle.inclusion_plan(index, size)
    consistency = merkle.consistency_plan(size1, size)
    assert len(inclusion) <= size.bit_length()
    assert len(merkle.plan_nodes(inclusion)) <= bound
    assert len(merkle.plan_nodes(consistency)) <= bound + 2
    for level, idx in merkle.plan_nodes(inclusion) | merkle.plan_nodes(consistency):
        assert (idx + 1) << level <= size  # complete subtrees of the tree only
