"""One record per sampled answer, from rollout to update: `Sample`, and its prompt's `Group`.

    rollouts (resd.generation.engines)  ->  score_samples(env, tasks, rollouts, tau)  ->  list[Sample]
                                 groups_of(samples)                         ->  list[Group]

A `Sample` is what every later stage reads: the context engine (who succeeded, which peer's
answer is a solution), the update (items are built by `Sample.index`, never matched by content),
the probe and the experiments. Whether a sample succeeded is decided once, here, with the run's
threshold tau (paper §3.3: a response is a success when its reward reaches tau); nothing
downstream compares a reward with a threshold again.

A `Group` is the N samples of one prompt (paper §2: SDPO's and GRPO's groups; N = 1 for RESD),
built once per step by `groups_of` and read for peers, group success and advantages.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

from resd.envs.base import Environment, Outcome, Task
from resd.eval.scoring import score_rollouts


@dataclass(frozen=True)
class Sample:
    """One scored answer of one inner iteration."""

    index: int
    """Position in the step's batch (all ranks' samples, prompt by prompt): the sample's name."""
    group: int
    """Index of the prompt it answers; the N samples of one prompt share it."""
    task: Task
    text: str
    """The answer, decoded without special tokens."""
    prompt_ids: list[int]
    """The student's chat-templated prompt."""
    completion_ids: list[int]
    """The sampled tokens (with EOS when the model stopped)."""
    truncated: bool
    """Generation hit the token budget without EOS."""
    outcome: Outcome
    succeeded: bool
    """reward >= tau: the one success test of the run."""


@dataclass(frozen=True)
class Group:
    """The samples of one prompt, in sample order."""

    index: int
    task: Task
    samples: tuple[Sample, ...]

    @property
    def rewards(self) -> list[float]:
        return [s.outcome.reward for s in self.samples]

    @property
    def any_succeeded(self) -> bool:
        return any(s.succeeded for s in self.samples)

    def successes(self) -> list[Sample]:
        return [s for s in self.samples if s.succeeded]


def score_samples(env: Environment, tasks: Sequence[Task], rollouts: Sequence[Sequence[Any]], success_threshold: float,
                  *, groups: Sequence[int] | None = None) -> list[Sample]:
    """Score `rollouts[i][j]` (a `Rollout`, or a plain answer string) against `tasks[i]` and return
    one `Sample` each, prompt by prompt. `groups[i]` is task i's group index (default i): a rank
    scoring its share of a batch passes the batch positions of its prompts."""
    outcomes = score_rollouts(env, tasks, rollouts)
    groups = list(range(len(tasks))) if groups is None else list(groups)
    samples = []
    for g, task, row, scored in zip(groups, tasks, rollouts, outcomes, strict=True):
        for r, outcome in zip(row, scored, strict=True):
            text = r if isinstance(r, str) else r.text
            samples.append(Sample(index=len(samples), group=g, task=task, text=text,
                                  prompt_ids=[] if isinstance(r, str) else list(r.prompt_ids),
                                  completion_ids=[] if isinstance(r, str) else list(r.completion_ids),
                                  truncated=False if isinstance(r, str) else bool(r.truncated),
                                  outcome=outcome, succeeded=outcome.reward >= success_threshold))
    return samples


def in_batch_order(samples: Sequence[Sample]) -> list[Sample]:
    """Samples gathered from several ranks, ordered by group (then by their order within it) and
    renumbered 0..n-1."""
    ordered = sorted(samples, key=lambda s: (s.group, s.index))
    return [replace(s, index=i) for i, s in enumerate(ordered)]


def groups_of(samples: Sequence[Sample]) -> list[Group]:
    """The groups of a batch, in order of first appearance."""
    members: dict[int, list[Sample]] = {}
    for s in samples:
        members.setdefault(s.group, []).append(s)
    return [Group(g, ss[0].task, tuple(ss)) for g, ss in members.items()]
