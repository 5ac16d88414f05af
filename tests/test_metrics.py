"""mean@k, best@k, aggregation of Outcomes, and the paper's rank-sum checkpoint rule."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resd.envs.base import Outcome
from resd.eval.metrics import (
    METRIC_KEYS,
    aggregate,
    best_at_k,
    mean_at_k,
    select_checkpoint,
    task_score,
)

score_rows = st.lists(st.lists(st.floats(0, 1), min_size=1, max_size=6), min_size=1, max_size=8)


def test_mean_and_best_at_k_by_hand():
    scores = [[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 1]]
    assert mean_at_k(scores) == pytest.approx((0.25 + 0 + 0.75) / 3)
    assert best_at_k(scores) == pytest.approx(2 / 3)


def test_fractional_scores():
    scores = [[0.5, 0.25], [1.0, 0.0]]
    assert mean_at_k(scores) == pytest.approx((0.375 + 0.5) / 2)
    assert best_at_k(scores) == pytest.approx(0.75)


@given(score_rows)
def test_best_is_at_least_mean_and_both_stay_in_range(scores):
    mean, best = mean_at_k(scores), best_at_k(scores)
    assert 0 <= mean <= best + 1e-12 <= 1 + 1e-12


@given(st.lists(st.floats(0, 1), min_size=1, max_size=8))
def test_one_sample_per_problem_makes_mean_equal_best(column):
    scores = [[v] for v in column]
    assert mean_at_k(scores) == pytest.approx(best_at_k(scores))


@pytest.mark.parametrize("fn", [mean_at_k, best_at_k])
def test_empty_input_is_a_clear_error(fn):
    with pytest.raises(ValueError, match="empty"):
        fn([])
    with pytest.raises(ValueError, match="problem 1 has no samples"):
        fn([[1.0], []])


def outcome(passed: list[bool]) -> Outcome:
    acc = sum(passed) / len(passed) if passed else 0.0
    return Outcome(reward=float(all(passed) and bool(passed)), acc=acc, feedback="", passed=passed)


def test_aggregate_separates_per_task_and_per_case_accuracy():
    outcomes = [
        [outcome([True, True]), outcome([True, False])],   # solved once; cases 1.0 and 0.5
        [outcome([False, False]), outcome([True, False])],  # never solved; cases 0 and 0.5
    ]
    result = aggregate(outcomes)
    assert result["per_task_mean@k"] == pytest.approx(0.25)
    assert result["per_task_best@k"] == pytest.approx(0.5)
    assert result["per_case_mean@k"] == pytest.approx((0.75 + 0.25) / 2)
    assert result["per_case_best@k"] == pytest.approx((1.0 + 0.5) / 2)
    assert result["k"] == 2 and result["n_tasks"] == 2


def test_task_score_without_per_case_results_uses_acc():
    assert task_score(Outcome(reward=1.0, acc=1.0, feedback="")) == 1.0
    assert task_score(Outcome(reward=0.0, acc=0.9, feedback="")) == 0.0
    # With per-case results, all must pass, whatever acc says.
    assert task_score(Outcome(reward=0.0, acc=1.0, feedback="", passed=[True, False])) == 0.0


def step(a, b, c, d, **extra):
    return dict(zip(METRIC_KEYS, (a, b, c, d)), **extra)


def test_select_checkpoint_picks_the_highest_rank_sum():
    history = [
        step(0.10, 0.20, 0.30, 0.40, step=0),
        step(0.50, 0.60, 0.35, 0.45, step=10),   # best on three metrics
        step(0.40, 0.70, 0.33, 0.41, step=20),   # best on one
    ]
    assert select_checkpoint(history) == 1


def test_select_checkpoint_is_not_fooled_by_one_huge_metric():
    # Ranks, not raw values: a big win on one metric loses to small wins on three.
    history = [step(0.99, 0.10, 0.10, 0.10), step(0.01, 0.11, 0.11, 0.11)]
    assert select_checkpoint(history) == 1


def test_ties_go_to_the_later_step():
    history = [step(0.5, 0.5, 0.5, 0.5), step(0.5, 0.5, 0.5, 0.5), step(0.1, 0.1, 0.1, 0.1)]
    assert select_checkpoint(history) == 1
    crossing = [step(0.9, 0.9, 0.1, 0.1), step(0.1, 0.1, 0.9, 0.9)]
    assert select_checkpoint(crossing) == 1


def test_bookkeeping_keys_are_not_ranked():
    # `step` and `rollouts` grow every time; ranking them would always pick the last step.
    history = [step(0.9, 0.9, 0.9, 0.9, step=0, rollouts=10, k=4), step(0.1, 0.1, 0.1, 0.1, step=5, rollouts=20, k=4)]
    assert select_checkpoint(history) == 0


def test_explicit_metrics_and_generic_histories():
    history = [{"loss_acc": 0.2, "other": 0.9, "step": 1}, {"loss_acc": 0.8, "other": 0.1, "step": 2}]
    assert select_checkpoint(history, metrics=["loss_acc"]) == 1
    assert select_checkpoint(history, metrics=["other"]) == 0
    # Without the four eval keys, every shared numeric non-bookkeeping key counts: 1+2 vs 2+1, tie -> later.
    assert select_checkpoint(history) == 1


def test_nan_ranks_lowest():
    history = [step(math.nan, 0.5, 0.5, 0.5), step(0.0, 0.5, 0.5, 0.5)]
    assert select_checkpoint(history) == 1


def test_select_checkpoint_errors():
    with pytest.raises(ValueError, match="empty history"):
        select_checkpoint([])
    with pytest.raises(ValueError, match="lacks metric"):
        select_checkpoint([step(1, 1, 1, 1), {"per_task_mean@k": 1}], metrics=list(METRIC_KEYS))
    with pytest.raises(ValueError, match="not a number"):
        select_checkpoint([{"a": "x"}, {"a": 1}], metrics=["a"])


@given(st.lists(st.tuples(*[st.floats(0, 1)] * 4), min_size=1, max_size=10))
def test_a_step_that_dominates_every_other_is_selected(rows):
    history = [step(*row) for row in rows]
    best = [max(col) + 0.01 for col in zip(*rows)]
    history.insert(len(history) // 2, step(*best))
    assert select_checkpoint(history) == len(rows) // 2
