"""The Mann-Whitney U of benchmarks/rank_statistics.py against its definition.

U counts the pairs in which the first sample's value is the larger (ties one
half); its null mean and tie-corrected variance are checked against the exact
distribution over every way of splitting a small pooled sample.
"""

from __future__ import annotations

import math
import os
import statistics
from itertools import combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.rank_statistics import average_ranks, mann_whitney, percentile

IN_CI = os.environ.get("CI") == "true"
PROPERTY = settings(max_examples=200, deadline=None, database=None, derandomize=IN_CI)
# Few distinct values, so that ties are common.
samples = st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=12)


def u_by_definition(a: list[int], b: list[int]) -> float:
    """Every pair counted: 1 when a's value is larger, 1/2 when tied."""
    return sum(1.0 if x > y else 0.5 if x == y else 0.0 for x in a for y in b)


def test_textbook_example_tortoises_and_hares() -> None:
    """Six tortoises and six hares finish T H H H H H T T T T T H (Wikipedia's
    example of the U test): the tortoises' U is 11 counted by who beats whom,
    25 counted by who finishes later."""
    tortoises, hares = [1, 7, 8, 9, 10, 11], [2, 3, 4, 5, 6, 12]
    assert mann_whitney(tortoises, hares).u == 25
    assert mann_whitney(hares, tortoises).u == 11


def test_separated_samples_by_hand() -> None:
    """[1, 2, 3] against [4, 5, 6]: U = 0, mean 4.5, variance 3 * 3 * 7 / 12 = 5.25."""
    result = mann_whitney([1, 2, 3], [4, 5, 6])
    assert (result.u, result.mean, result.variance) == (0, 4.5, 5.25)
    assert result.z == pytest.approx(-4.5 / math.sqrt(5.25))
    assert result.z == pytest.approx(-1.963961, abs=1e-6)
    assert result.share == 0


def test_average_ranks_share_ties() -> None:
    """Tied values take the mean of the ranks they span."""
    assert average_ranks([10, 20, 20, 5, 20]) == ([2.0, 4.0, 4.0, 1.0, 4.0], [1, 1, 3])


def test_all_tied_has_no_evidence() -> None:
    """When every value is the same, U is at its mean and z is 0 (no division by 0)."""
    result = mann_whitney([3, 3], [3, 3, 3])
    assert (result.u, result.variance, result.z) == (3, 0, 0)


@pytest.mark.parametrize(
    ("pooled", "n_a"),
    [([1, 2, 3, 4, 5, 6], 3), ([1, 2, 2, 3, 3, 3, 4, 5], 3), ([0, 0, 1, 1, 1, 2, 2, 9, 9], 4)],
)
def test_mean_and_variance_are_exact_over_every_split(pooled: list[int], n_a: int) -> None:
    """Given the pooled values, every split into A and B is equally likely under
    the null hypothesis; the mean and variance of U over all splits are exactly
    the formula's, tie correction included."""
    us = []
    for chosen in combinations(range(len(pooled)), n_a):
        a = [pooled[i] for i in chosen]
        b = [pooled[i] for i in range(len(pooled)) if i not in chosen]
        us.append(u_by_definition(a, b))
    result = mann_whitney(pooled[:n_a], pooled[n_a:])
    assert statistics.fmean(us) == pytest.approx(result.mean)
    assert statistics.pvariance(us) == pytest.approx(result.variance)


def test_samples_must_not_be_empty() -> None:
    """U of an empty sample means nothing."""
    with pytest.raises(ValueError, match="at least one"):
        mann_whitney([], [1])


@PROPERTY
@given(samples, samples)
def test_u_is_the_count_of_larger_pairs(a: list[int], b: list[int]) -> None:
    """The rank-sum U equals U counted pair by pair, and swapping the samples
    mirrors U around its mean and flips z."""
    forward, backward = mann_whitney(a, b), mann_whitney(b, a)
    assert forward.u == pytest.approx(u_by_definition(a, b))
    assert forward.u + backward.u == pytest.approx(len(a) * len(b))
    assert forward.z == pytest.approx(-backward.z)


def test_percentile_interpolates_like_numpy() -> None:
    """The 10th and 90th percentile of 1..11 are 2 and 10; of 1..4, 1.3 and 3.7."""
    assert percentile(list(range(1, 12)), 0.1) == pytest.approx(2)
    assert percentile(list(range(1, 12)), 0.9) == pytest.approx(10)
    assert percentile([4, 1, 3, 2], 0.1) == pytest.approx(1.3)
    assert percentile([4, 1, 3, 2], 0.9) == pytest.approx(3.7)
    assert percentile([7], 0.9) == 7
