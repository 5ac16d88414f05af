"""Discovery-probability math behind `resd bench discovery`."""

from __future__ import annotations

import itertools
import math

import pytest

from resd.experiments.discovery import (
    DiscoveryComparison,
    attempts_to_reach,
    best_of_k_curve,
    discovery_curve,
    first_success,
    pass_at_k,
)


@pytest.mark.parametrize("n, c", [(8, 0), (8, 1), (8, 3), (8, 8), (5, 2), (10, 9)])
def test_pass_at_k_equals_the_exhaustive_count_over_k_subsets(n: int, c: int):
    outcomes = [True] * c + [False] * (n - c)
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(outcomes, k))
        exact = sum(any(s) for s in subsets) / len(subsets)
        assert pass_at_k(n, c, k) == pytest.approx(exact)


def test_pass_at_k_closed_form_and_errors():
    assert pass_at_k(10, 1, 3) == pytest.approx(1 - math.comb(9, 3) / math.comb(10, 3))
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_best_of_k_curve_averages_tasks_and_rises():
    curve = best_of_k_curve([(4, 0), (4, 1), (4, 4)], 4)
    assert curve[0] == pytest.approx((0 + 0.25 + 1) / 3)
    assert curve[-1] == pytest.approx((0 + 1 + 1) / 3)
    assert all(a <= b for a, b in zip(curve, curve[1:]))


def test_discovery_curve_counts_first_successes():
    seqs = [[False, True, True], [False, False, False], [True], [False, False, True]]
    firsts = [first_success(s) for s in seqs]
    assert firsts == [2, None, 1, 3]
    assert discovery_curve(firsts, 3) == [0.25, 0.5, 0.75]
    with pytest.raises(ValueError):
        discovery_curve([0], 2)


def test_attempt_saving_at_best_of_k_budget():
    comparison = DiscoveryComparison(best_of_k=[0.1, 0.2, 0.3, 0.4, 0.45, 0.5],
                                     self_distillation=[0.1, 0.5, 0.6, 0.6, 0.6, 0.6])
    assert comparison.target == 0.5
    assert attempts_to_reach(comparison.self_distillation, 0.5) == 2
    assert comparison.attempts_ratio() == pytest.approx(3.0)
    assert DiscoveryComparison([0.0, 0.0], [0.5, 1.0]).attempts_ratio() is None
    assert DiscoveryComparison([0.1, 0.2], [0.0, 0.1]).attempts_ratio() is None
