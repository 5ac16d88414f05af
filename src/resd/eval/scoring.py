"""Scoring sampled answers with an environment: the one route from rollouts to outcomes, shared by
training, evaluation and the in-context (ICL) loop."""

from __future__ import annotations

from typing import Any, Sequence

from resd.envs.base import Environment, Outcome, Task, score_guarded


def score_rollouts(env: Environment, tasks: Sequence[Task], rollouts: Sequence[Sequence[Any]]) -> list[list[Outcome]]:
    """`outcomes[i][j]` judges `rollouts[i][j]` (a `Rollout` or a plain string) as an answer to
    `tasks[i]`. Everything is scored in one `env.score_many` call, so environments that
    parallelise (sandboxed code) can; an answer that makes the judge raise becomes a judge error
    (reward 0) instead of stopping the caller (`resd.envs.base.score_guarded`)."""
    if len(tasks) != len(rollouts):
        raise ValueError(f"{len(tasks)} tasks for {len(rollouts)} groups of rollouts")
    flat_tasks = [t for t, row in zip(tasks, rollouts) for _ in row]
    texts = [r if isinstance(r, str) else r.text for row in rollouts for r in row]
    flat = score_guarded(env, flat_tasks, texts)
    outcomes, position = [], 0
    for row in rollouts:
        outcomes.append(list(flat[position:position + len(row)]))
        position += len(row)
    return outcomes
