"""Evaluation math, as pure functions (RESD paper §4.1, "Metrics and Baselines").

For each test problem k responses are sampled. A response's *per-task* score is 1 when it passes
every test case and 0 otherwise; its *per-test-case* score is the fraction of test cases passed.
Each is reported as mean@k (the average over the k samples, averaged over problems) and best@k
(the best of the k samples, averaged over problems). Checkpoints are chosen by the paper's
rank-sum rule (`select_checkpoint`). All values are fractions in [0, 1].
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from resd.envs.base import Outcome

PER_TASK_MEAN = "per_task_mean@k"
PER_TASK_BEST = "per_task_best@k"
PER_CASE_MEAN = "per_case_mean@k"
PER_CASE_BEST = "per_case_best@k"
METRIC_KEYS: tuple[str, ...] = (PER_TASK_MEAN, PER_TASK_BEST, PER_CASE_MEAN, PER_CASE_BEST)
"""The four validation metrics the paper reports and ranks for checkpoint selection."""


def _check_scores(scores: Sequence[Sequence[float]]) -> None:
    if len(scores) == 0:
        raise ValueError("no problems to score: scores is empty (need scores[i][j] for problem i, sample j)")
    for i, row in enumerate(scores):
        if len(row) == 0:
            raise ValueError(f"problem {i} has no samples; every problem needs at least one score")


def mean_at_k(scores: Sequence[Sequence[float]]) -> float:
    """Average over problems of the average score of that problem's samples.

    `scores[i][j]` is sample j's score on problem i. With 0/1 scores this is the expected
    pass@1 estimated from k samples.
    """
    _check_scores(scores)
    return sum(sum(row) / len(row) for row in scores) / len(scores)


def best_at_k(scores: Sequence[Sequence[float]]) -> float:
    """Average over problems of the best score among that problem's samples.

    With 0/1 scores this is the fraction of problems solved by at least one of the k samples.
    """
    _check_scores(scores)
    return sum(max(row) for row in scores) / len(scores)


def task_score(outcome: Outcome) -> float:
    """Per-task score of one sample: 1.0 when every test case passed, else 0.0.

    An environment that reports no per-case results (`passed` empty) is judged by `acc == 1`.
    """
    if outcome.passed:
        return 1.0 if outcome.solved else 0.0
    return 1.0 if outcome.acc >= 1.0 else 0.0


def aggregate(outcomes: Sequence[Sequence[Outcome]]) -> dict[str, Any]:
    """The four metrics from `outcomes[i][j]` (problem i, sample j), plus `k` and `n_tasks`.

    `k` is the number of samples per problem (the largest, should rows differ).
    """
    _check_scores(outcomes)  # same shape rules as scores
    per_task = [[task_score(o) for o in row] for row in outcomes]
    per_case = [[float(o.acc) for o in row] for row in outcomes]
    return {
        PER_TASK_MEAN: mean_at_k(per_task),
        PER_TASK_BEST: best_at_k(per_task),
        PER_CASE_MEAN: mean_at_k(per_case),
        PER_CASE_BEST: best_at_k(per_case),
        "k": max(len(row) for row in outcomes),
        "n_tasks": len(outcomes),
    }


def _ranks(values: Sequence[float]) -> list[float]:
    """Rank 1 = lowest value; tied values share the average of their ranks; NaN ranks lowest."""
    keyed = [(-math.inf if math.isnan(v) else float(v), i) for i, v in enumerate(values)]
    order = sorted(range(len(keyed)), key=lambda i: keyed[i][0])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and keyed[order[end + 1]][0] == keyed[order[start]][0]:
            end += 1
        shared = (start + end) / 2 + 1  # average of ranks start+1 .. end+1
        for position in range(start, end + 1):
            ranks[order[position]] = shared
        start = end + 1
    return ranks


def select_checkpoint(history: Sequence[Mapping[str, Any]], metrics: Sequence[str] | None = None) -> int:
    """Index of the logged step the paper's rule picks (§4.1).

    Each metric is ranked across the steps (higher value = higher rank, ties share the average
    rank), the ranks are summed per step, and the step with the highest total wins; on a tied
    total the later step wins. `metrics` defaults to the four validation metrics (`METRIC_KEYS`)
    when the history has them, otherwise every numeric key all steps share except bookkeeping
    (`step`, `rollouts`, `k`, `n_tasks`, ...).
    """
    if len(history) == 0:
        raise ValueError("cannot select a checkpoint from an empty history (no evaluation was logged)")
    keys = list(metrics) if metrics is not None else _default_metric_keys(history)
    if not keys:
        raise ValueError("no metric to rank: the history entries share no numeric metric keys")
    for index, entry in enumerate(history):
        missing = [key for key in keys if key not in entry]
        if missing:
            raise ValueError(f"history entry {index} lacks metric(s) {missing}; every logged step needs all of {keys}")

    totals = [0.0] * len(history)
    for key in keys:
        for index, rank in enumerate(_ranks([_as_float(entry[key]) for entry in history])):
            totals[index] += rank
    best = max(totals)
    return max(i for i, total in enumerate(totals) if total == best)


_BOOKKEEPING = {"step", "rollouts", "k", "n_tasks", "batch", "iteration", "epoch", "time"}


def _default_metric_keys(history: Sequence[Mapping[str, Any]]) -> list[str]:
    if all(all(key in entry for key in METRIC_KEYS) for entry in history):
        return list(METRIC_KEYS)
    shared = [key for key in history[0] if all(key in entry for entry in history)]
    return [
        key for key in shared
        if key not in _BOOKKEEPING and not key.startswith("time/")
        and all(isinstance(entry[key], (int, float)) and not isinstance(entry[key], bool) for entry in history)
    ]


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"metric value {value!r} is not a number") from None


# Two-sided 95% Student-t quantiles by degrees of freedom (n - 1); beyond 30 the normal 1.96.
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
       20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
       29: 2.045, 30: 2.042}


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% confidence interval (Student t); NaN half-width with
    fewer than two values, (NaN, NaN) with none."""
    values = [float(v) for v in values]
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return mean, T95.get(len(values) - 1, 1.96) * sd / math.sqrt(len(values))
