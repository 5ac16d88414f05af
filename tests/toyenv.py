"""The toy environment the training tests share: succeed when the completion contains the task's
letter. About half of a tiny random model's samples do, so every method sees both successes and
failures. Importable as `toyenv:LetterEnv` by runs started in a subprocess (see conftest.py)."""

from __future__ import annotations

from resd.envs import Environment, Outcome, Task

LETTERS = "aeo"


class LetterEnv(Environment):
    name = "letters"
    description = "write a word containing a given letter (tests)"

    def __init__(self, train_size: int = 16, test_size: int = 3) -> None:
        self.sizes_ = {"train": train_size, "test": test_size}

    def tasks(self, split):
        return [Task(id=f"{split}-{i}",
                     prompt=[{"role": "user", "content": f"Write a word with {LETTERS[i % 3]} ({i})."}],
                     meta={"letter": LETTERS[i % 3]})
                for i in range(self.sizes_[split])]

    def score(self, task, completion):
        ok = task.meta["letter"] in completion
        return Outcome(reward=float(ok), acc=float(ok), passed=[ok],
                       feedback="" if ok else f"the answer lacks the letter {task.meta['letter']}")
