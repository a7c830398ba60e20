"""Order statistics for the benchmarks: Mann-Whitney U with its normal approximation.

Written out here instead of taken from scipy, which the project does not depend
on. tests/test_benchmark_stats.py checks it against the definition of U (pairs
counted one by one), a textbook example and the exact variance over every split
of small samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class MannWhitney:
    """U of sample A against sample B, and how far U lies from what chance gives."""

    u: float  # pairs (a, b) with a > b, a tie counting one half
    n_a: int
    n_b: int
    mean: float  # of U when A and B come from one distribution
    variance: float  # of U then, corrected for ties
    z: float  # (u - mean) / sqrt(variance); positive when A tends to be larger

    @property
    def share(self) -> float:
        """The share of pairs in which A is larger (ties half): 0.5 when there is no effect."""
        return self.u / (self.n_a * self.n_b)


def average_ranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """The rank of each value (1-based; tied values share their average rank) and
    the size of every group of ties."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    ties = []
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        rank = (start + end) / 2 + 1
        for position in range(start, end + 1):
            ranks[order[position]] = rank
        ties.append(end - start + 1)
        start = end + 1
    return ranks, ties


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> MannWhitney:
    """Mann-Whitney U of A against B with the tie-corrected normal approximation.

    U is the rank sum of A minus its least possible value, n_a (n_a + 1) / 2,
    which equals the number of pairs in which A's value is the larger (ties one
    half). Under the null hypothesis U has mean n_a n_b / 2 and variance
    n_a n_b / 12 * (n + 1 - sum(t^3 - t) / (n (n - 1))) over the groups of t
    tied values; z uses no continuity correction. Both samples must be
    non-empty; when every value is tied the variance is 0 and so is z.
    """
    n_a, n_b = len(a), len(b)
    if not n_a or not n_b:
        raise ValueError("both samples need at least one value")
    n = n_a + n_b
    ranks, ties = average_ranks([*a, *b])
    u = sum(ranks[:n_a]) - n_a * (n_a + 1) / 2
    mean = n_a * n_b / 2
    tie_term = sum(t**3 - t for t in ties) / (n * (n - 1)) if n > 1 else 0.0
    variance = n_a * n_b / 12 * (n + 1 - tie_term)
    z = (u - mean) / math.sqrt(variance) if variance > 0 else 0.0
    return MannWhitney(u=u, n_a=n_a, n_b=n_b, mean=mean, variance=variance, z=z)


def percentile(values: Sequence[float], share: float) -> float:
    """The value below which ``share`` of the sample lies (linear interpolation
    between the closest ranks, as numpy's default)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = share * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
