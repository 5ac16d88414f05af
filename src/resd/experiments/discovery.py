"""Discovery probability: the chance that a task is solved at least once within k attempts.

Two ways to spend k attempts on a hard task (SDPO paper, test-time self-distillation):
  * best-of-k sampling: k independent samples from the unchanged model;
  * test-time self-distillation: attempt, feedback, distil, retry (each attempt sees an updated model).

For best-of-k we draw n >= k samples per task and use the unbiased estimator of
P(at least one success in k draws without replacement) = 1 - C(n-c, k) / C(n, k)
(Chen et al. 2021, the pass@k estimator), which has lower variance than counting one k-draw.
For self-distillation the estimate is the fraction of (task, trial) sequences whose first success
came at attempt <= k. Pure functions only: numbers in, numbers out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased P(>= 1 success among k draws) from n samples with c successes."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    # 1 - prod_{i=n-c+1}^{n} (1 - k/i): the stable product form of 1 - C(n-c,k)/C(n,k).
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def best_of_k_curve(counts: Sequence[tuple[int, int]], max_k: int) -> list[float]:
    """Mean over tasks of pass@k for k = 1..max_k; `counts` holds (n samples, c successes) per task."""
    if not counts:
        raise ValueError("no tasks")
    return [sum(pass_at_k(n, c, k) for n, c in counts) / len(counts) for k in range(1, max_k + 1)]


def discovery_curve(first_success: Sequence[int | None], max_k: int) -> list[float]:
    """P(first success at attempt <= k) for k = 1..max_k; one entry per sequence (None = never)."""
    if not first_success:
        raise ValueError("no attempt sequences")
    for a in first_success:
        if a is not None and a < 1:
            raise ValueError(f"attempt numbers start at 1, got {a}")
    return [sum(1 for a in first_success if a is not None and a <= k) / len(first_success)
            for k in range(1, max_k + 1)]


def first_success(rewards: Sequence[bool]) -> int | None:
    """1-based index of the first solved attempt, or None."""
    return next((i + 1 for i, ok in enumerate(rewards) if ok), None)


def attempts_to_reach(curve: Sequence[float], target: float) -> int | None:
    """Smallest k with curve[k-1] >= target (None when the curve never gets there)."""
    return next((k + 1 for k, p in enumerate(curve) if p >= target - 1e-12), None)


@dataclass
class DiscoveryComparison:
    """Both curves over k = 1..K and the attempt saving at best-of-K's final discovery rate."""

    best_of_k: list[float]
    self_distillation: list[float]

    @property
    def target(self) -> float:
        """Best-of-k's discovery probability with the whole budget K."""
        return self.best_of_k[-1]

    def attempts_ratio(self) -> float | None:
        """K_best-of-k / K_self-distillation to reach `target` (SDPO reports ~3x); None if undefined."""
        if self.target <= 0:
            return None
        a = attempts_to_reach(self.best_of_k, self.target)
        b = attempts_to_reach(self.self_distillation, self.target)
        return None if a is None or b is None else a / b
