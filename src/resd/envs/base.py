"""The environment contract: tasks in, reward + acc + text feedback out.

Every task the trainer, the evaluator and the context engine touch goes through this interface,
so a new task never needs a change anywhere else.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

Message = dict[str, str]  # {"role": "user" | "system" | "assistant", "content": str}
Split = Literal["train", "test"]

FEEDBACK_LIMIT = 2000
"""Feedback is capped at about 2000 characters, as in the paper's verifiers (paper §4.1)."""


@dataclass(frozen=True)
class Task:
    """One problem: a stable id, the chat messages the student sees, and task data for scoring."""

    id: str
    prompt: list[Message]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt_text(self) -> str:
        """The last user message: the part teacher prompts and reflections quote."""
        for message in reversed(self.prompt):
            if message.get("role") == "user":
                return message.get("content", "")
        return ""


@dataclass
class Outcome:
    """What the environment says about one completion.

    reward:   the training signal (binary all-pass by default).
    acc:      fraction of test cases passed (the paper's per-test-case accuracy).
    feedback: judge-style text for the teacher and the reflector ("" when nothing to say).
    passed:   one bool per test case.
    details:  anything else a task wants to expose (parsed answer, error kind, ...).
    """

    reward: float
    acc: float
    feedback: str
    passed: list[bool] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def solved(self) -> bool:
        """All test cases passed (the paper's per-task accuracy for one sample)."""
        return bool(self.passed) and all(self.passed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reward": self.reward,
            "acc": self.acc,
            "feedback": self.feedback,
            "passed": list(self.passed),
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Outcome":
        return cls(
            reward=float(d["reward"]),
            acc=float(d["acc"]),
            feedback=str(d.get("feedback", "")),
            passed=[bool(x) for x in d.get("passed", [])],
            details=dict(d.get("details", {})),
        )


def clip_feedback(text: str, limit: int = FEEDBACK_LIMIT) -> str:
    """Cap feedback at `limit` characters, saying that it was cut."""
    if len(text) <= limit:
        return text
    marker = "\n... (feedback truncated)"
    return text[: max(0, limit - len(marker))] + marker


class Environment(ABC):
    """A task family that returns reward and text feedback.

    Subclasses set `name` and implement `tasks` and `score` (and, optionally, `reference_solution`).
    `score` must never raise on any completion text: malformed output is an Outcome with reward 0
    and feedback that says why.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    @abstractmethod
    def tasks(self, split: Split) -> list[Task]:
        """All tasks of a split ("train" or "test"), in a fixed order."""

    @abstractmethod
    def score(self, task: Task, completion: str) -> Outcome:
        """Judge one completion of one task."""

    def reference_solution(self, task: Task) -> str | None:
        """A known-good answer to `task`, or None when the environment has none (optional).
        `resd probe` scores it under the student's and the teacher's prompts; `resd env show`
        scores it when no completion is given."""
        return None

    def score_many(self, tasks: list[Task], completions: list[str]) -> list[Outcome]:
        """Judge a batch (override to parallelise, e.g. sandboxed code). Callers go through
        `score_guarded`, so an answer that makes the judge raise costs only that answer."""
        return [self.score(t, c) for t, c in zip(tasks, completions, strict=True)]

    def sizes(self) -> dict[str, int]:
        return {split: len(self.tasks(split)) for split in ("train", "test")}

    def task_by_id(self, task_id: str, split: Split | None = None) -> Task:
        splits: list[Split] = [split] if split else ["train", "test"]
        for s in splits:
            for t in self.tasks(s):
                if t.id == task_id:
                    return t
        from resd.errors import UserError

        raise UserError(f"no task with id {task_id!r} in {self.name} ({'/'.join(splits)}); "
                        f"`resd env show {self.name}` lists ids")


def judge_error(exc: BaseException) -> Outcome:
    """The outcome of an answer the judge failed on: reward 0, and feedback that says it was the
    judge, not the answer (counted as `judge_errors` in the training metrics)."""
    what = f"{type(exc).__name__}: {str(exc)[:200]}"
    return Outcome(reward=0.0, acc=0.0, feedback=f"The judge failed on this answer ({what}); it counts as not passed.",
                   passed=[], details={"judge_error": what})


def score_guarded(env: Environment, tasks: list[Task], completions: list[str]) -> list[Outcome]:
    """`env.score_many`, but one answer that makes the judge raise costs only that answer: the
    batch is re-scored one by one and a failing answer becomes `judge_error`. A UserError (a
    setup problem, e.g. no sandbox) is not the answer's fault and propagates."""
    from resd.errors import UserError

    try:
        outcomes = env.score_many(tasks, completions)
        if len(outcomes) == len(tasks) and all(isinstance(o, Outcome) for o in outcomes):
            return list(outcomes)
    except UserError:
        raise
    except Exception:  # noqa: BLE001 - find the answer(s) responsible below
        pass
    out = []
    for task, completion in zip(tasks, completions, strict=True):
        try:
            outcome = env.score(task, completion)
            out.append(outcome if isinstance(outcome, Outcome) else judge_error(TypeError("score returned no Outcome")))
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001
            out.append(judge_error(exc))
    return out
