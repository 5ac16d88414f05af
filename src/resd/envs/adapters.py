"""Expose an Environment to TRL-style trainers (GRPOTrainer, SDPOTrainer, ...).

TRL calls each reward function as `f(prompts=..., completions=..., completion_ids=..., **columns)`,
where `columns` are the dataset's other columns repeated per completion, and names the function's
logged metric after `f.__name__`. `to_dataset` builds a dataset with a `task_id` column so the
reward functions can find each completion's task.

    dataset = to_dataset(env, "train")
    reward, acc = reward_functions(env)
    GRPOTrainer(model, reward_funcs=[reward, acc], args=GRPOConfig(reward_weights=[1.0, 0.0], ...),
                train_dataset=dataset)

`acc` is there to be logged; give it weight 0 so it does not add to the training reward. Both
functions share one scoring pass, and keep that batch's `Outcome`s and feedback texts on
`last_outcomes` / `last_feedback` so a trainer can read per-rollout feedback.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from resd.envs.base import Environment, Outcome, Task, score_guarded

RewardFunction = Callable[..., list[float]]


def completion_text(completion: Any) -> str:
    """The text of one TRL completion: a string, or a chat list whose assistant turns are joined."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        return str(completion.get("content", ""))
    if isinstance(completion, Sequence):
        parts = [str(m.get("content", "")) for m in completion
                 if isinstance(m, Mapping) and m.get("role", "assistant") == "assistant"]
        return "".join(parts)
    raise TypeError(f"a completion must be a string or a list of chat messages, got {type(completion).__name__}")


class _SharedScorer:
    """Scores a batch once for every reward function that asks about the same batch."""

    def __init__(self, env: Environment, tasks_by_id: Mapping[str, Task] | None):
        self.env = env
        self._tasks_by_id = dict(tasks_by_id) if tasks_by_id is not None else None
        self._key: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        self.last_outcomes: list[Outcome] = []

    def tasks_by_id(self) -> Mapping[str, Task]:
        if self._tasks_by_id is None:  # built on first use: listing tasks can be slow
            self._tasks_by_id = {t.id: t for split in ("train", "test") for t in self.env.tasks(split)}  # type: ignore[arg-type]
        return self._tasks_by_id

    def outcomes(self, completions: Sequence[Any], task_id: Sequence[str] | None) -> list[Outcome]:
        if task_id is None:
            raise ValueError(
                "the reward function needs each completion's task id: the training dataset must have a "
                "`task_id` column (build it with resd.envs.adapters.to_dataset(env, split))"
            )
        if len(task_id) != len(completions):
            raise ValueError(f"got {len(completions)} completions but {len(task_id)} task ids")
        texts = tuple(completion_text(c) for c in completions)
        ids = tuple(str(t) for t in task_id)
        if self._key != (ids, texts):
            known = self.tasks_by_id()
            missing = sorted({i for i in ids if i not in known})
            if missing:
                raise ValueError(f"unknown task id(s) {missing[:5]} for environment {self.env.name!r}")
            self.last_outcomes = score_guarded(self.env, [known[i] for i in ids], list(texts))
            self._key = (ids, texts)
        return self.last_outcomes


def reward_functions(env: Environment, tasks_by_id: Mapping[str, Task] | None = None) -> list[RewardFunction]:
    """`[reward, acc]` for TRL: per completion, the environment's reward and per-case accuracy.

    tasks_by_id: the tasks completions may belong to (default: all train and test tasks of env).
    Each function carries `last_feedback` (list[str]) and `last_outcomes` (list[Outcome]) of the
    latest batch it scored.
    """
    scorer = _SharedScorer(env, tasks_by_id)

    def make(name: str, pick: Callable[[Outcome], float]) -> RewardFunction:
        def reward_function(prompts: Any = None, completions: Sequence[Any] = (), task_id: Sequence[str] | None = None,
                            **_: Any) -> list[float]:
            outcomes = scorer.outcomes(completions, task_id)
            reward_function.last_outcomes = outcomes  # type: ignore[attr-defined]
            reward_function.last_feedback = [o.feedback for o in outcomes]  # type: ignore[attr-defined]
            return [float(pick(o)) for o in outcomes]

        reward_function.__name__ = reward_function.__qualname__ = name
        reward_function.__doc__ = f"{env.name or type(env).__name__}: the environment's `{name}` per completion."
        reward_function.last_outcomes = []  # type: ignore[attr-defined]
        reward_function.last_feedback = []  # type: ignore[attr-defined]
        return reward_function

    return [make("reward", lambda o: o.reward), make("acc", lambda o: o.acc)]


def to_dataset(env: Environment, split: str = "train", limit: int | None = None) -> Any:
    """A `datasets.Dataset` with `prompt` (chat messages) and `task_id` columns, in task order."""
    import datasets

    tasks = list(env.tasks(split))  # type: ignore[arg-type]
    if limit is not None:
        tasks = tasks[:limit]
    if not tasks:
        from resd.errors import UserError

        raise UserError(f"environment {env.name!r} has no {split} tasks to build a dataset from")
    return datasets.Dataset.from_list([{"prompt": [dict(m) for m in t.prompt], "task_id": t.id} for t in tasks])
