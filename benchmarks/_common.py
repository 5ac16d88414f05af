"""Helpers every benchmark script shares: argument defaults, prompts, timing and the result table.

Each benchmark measures our code path and a plain reference side by side in one process (or in
sibling subprocesses for memory), prints one table row per measurement with the ratio, the
target and PASS/MISS, and exits 0 either way: a benchmark reports, it does not gate.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class Result:
    """One benchmark line: ours vs the reference, and the ratio's target."""

    name: str
    ours: float
    reference: float
    unit: str
    target: float | None
    """None: an information line without a target."""
    higher_is_better: bool = True
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.ours / self.reference if self.reference else float("nan")

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "info"
        ok = self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target
        return "PASS" if ok else "MISS"


def print_results(title: str, results: list[Result], context: dict[str, Any]) -> None:
    print(f"\n== {title} ==")
    for key, value in context.items():
        print(f"  {key}: {value}")
    header = f"{'measurement':<34} {'ours':>12} {'reference':>12} {'unit':<10} {'ratio':>7} {'target':>8}  verdict"
    print(header)
    print("-" * len(header))
    for r in results:
        target = "-" if r.target is None else f"{'>=' if r.higher_is_better else '<='}{r.target:>6.2f}"
        print(f"{r.name:<34} {r.ours:>12.3f} {r.reference:>12.3f} {r.unit:<10} {r.ratio:>7.3f} "
              f"{target:>8}  {r.verdict}{'  ' + r.note if r.note else ''}")


def add_common_arguments(parser: argparse.ArgumentParser, *, default_model: str = "smollm2-135m") -> None:
    parser.add_argument("--model", default=default_model,
                        help="model spec (HF id, dir, .gguf, smollm2-135m, or tiny-random for a quick check)")
    parser.add_argument("--env", default="constraints", help="environment whose prompts are used")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (median is reported)")


def task_prompts(env_name: str, count: int) -> list[list[dict[str, str]]]:
    """The chat prompts of the first `count` training tasks of an environment (repeated if fewer)."""
    import resd.envs

    tasks = resd.envs.get(env_name).tasks("train")
    if not tasks:
        raise SystemExit(f"environment {env_name!r} has no training tasks")
    return [tasks[i % len(tasks)].prompt for i in range(count)]


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall-clock seconds of `repeats` calls, and the last call's return value."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({torch.get_num_threads()} threads)"
