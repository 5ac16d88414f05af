"""Manufactoria-Has (RESD paper §4.1, Table 1: 742 train / 132 test): build a factory that accepts
exactly the tapes with a property (contains a substring, a subsequence, or enough of some colours).

Sources (`source`): our own generator ("generated", the default: offline, deterministic), the
paper's hub datasets `manufactoria/has_train` / `has_test` ("hf"), or the same records exported to
local files ("file", with `train_path` / `test_path`), all read by `resd.envs.records.load_records`.
Records are in the hub schema (`messages`, `ground_truth`, `id`, `problem_family`, `name`, ...) or
in the RESD training export (`prompt`, `reward_model.ground_truth` as JSON, `extra_info`); the
generator writes the hub schema (`problem_to_record`).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from importlib import resources
from typing import Any, ClassVar

from resd.envs.base import Environment, Outcome, Split, Task
from resd.envs.manufactoria.dsl import MAX_STEPS
from resd.envs.manufactoria.generators import SEED, Criterion, Problem, criterion_from_sentence, generated_splits
from resd.envs.manufactoria.solutions import reference_program
from resd.envs.manufactoria.scoring import REWARD_MODES, RewardMode, score_completion
from resd.envs.records import load_records
from resd.errors import UserError

HF_DATASETS = {"train": "manufactoria/has_train", "test": "manufactoria/has_test"}
"""The paper's hub datasets; each keeps its records in its `train` split."""
SOURCES = ("generated", "hf", "file")


def manual_text() -> str:
    """Our DSL manual (shipped as package data), the first part of every prompt."""
    return resources.files("resd.envs.manufactoria").joinpath("manual.md").read_text(encoding="utf-8")


def build_prompt(criteria: str) -> str:
    """The task prompt: the language manual, then the task with the puzzle's rule last (the shape of
    the RESD task's prompt; the wording is ours)."""
    return f"{manual_text().rstrip()}\n\n# Task\nBuild a factory, written in the code above, that does this:\n\n{criteria}"


def problem_to_record(problem: Problem) -> dict[str, Any]:
    """A generated problem in the Hugging Face record format (what `source=<file>` reads back)."""
    return {"messages": [{"role": "user", "content": build_prompt(problem.criteria)}],
            "ground_truth": [t.to_record() for t in problem.tests],
            "dataset": "manufactoria", "difficulty": "easy", "id": problem.id,
            "problem_family": problem.family, "name": problem.name}


def _criterion_meta(criterion: Criterion) -> dict[str, Any]:
    meta = asdict(criterion)
    meta["requirements"] = [list(r) for r in criterion.requirements]
    return meta


def _problem_task(problem: Problem) -> Task:
    criterion = _criterion_meta(problem.criterion)
    return Task(id=problem.id, prompt=[{"role": "user", "content": build_prompt(problem.criteria)}],
                meta={"family": problem.family, "name": problem.name, "criteria": problem.criteria,
                      "criterion": criterion, "tests": [t.to_record() for t in problem.tests],
                      "source": "generated"})


def _criteria_from_prompt(prompt: str) -> str:
    """The task sentence of a prompt: the "# Task" part without its intro line and answer-format note."""
    task_part = prompt.rsplit("# Task", 1)[-1]
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", task_part) if p.strip()]
    kept = [p for p in paragraphs if not p.endswith(":") and "```" not in p]
    return "\n\n".join(kept) if kept else task_part.strip()


def record_to_task(record: dict[str, Any], where: str) -> Task:
    """One HF-format (or RESD parquet-format) row -> Task. `where` names the row in errors."""
    extra = record.get("extra_info") or {}
    messages = record.get("messages") if record.get("messages") is not None else record.get("prompt")
    tests = record.get("ground_truth")
    if tests is None:
        tests = (record.get("reward_model") or {}).get("ground_truth")
    if isinstance(tests, str):
        try:
            tests = json.loads(tests)
        except json.JSONDecodeError as exc:
            raise UserError(f"{where}: ground_truth is not valid JSON ({exc})") from exc
    if not isinstance(messages, list) or not messages or not isinstance(tests, list):
        raise UserError(f"{where}: expected a Manufactoria record with 'messages' (chat list) and "
                        f"'ground_truth' (test cases), as in manufactoria/has_train")
    for case in tests:  # missing fields take the verifier's defaults (scoring.TestCase.from_record)
        if not isinstance(case, dict):
            raise UserError(f"{where}: each test case must be an object with 'input', 'expected_accepted', ..., "
                            f"got {case!r:.120}")
    prompt = [{"role": str(m.get("role", "user")), "content": str(m.get("content", ""))} for m in messages]
    user = next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
    task_id = record.get("id") or extra.get("index")
    if not task_id:
        raise UserError(f"{where}: the record has no 'id'")
    criteria = record.get("criteria") or _criteria_from_prompt(user)
    criterion = criterion_from_sentence(criteria)
    return Task(id=str(task_id), prompt=prompt,
                meta={"family": record.get("problem_family") or extra.get("problem_family", ""),
                      "name": record.get("name") or extra.get("name", ""),
                      "criteria": criteria,
                      "criterion": _criterion_meta(criterion) if criterion else None,
                      "tests": [dict(c) for c in tests], "source": where.rsplit(" row ", 1)[0]})


class ManufactoriaHas(Environment):
    """Manufactoria-Has with a judge that runs our own interpreter (the verifier's rules).

    source:      "generated" (default), "hf" (the paper's hub datasets) or "file" (local export).
    train_path:  with source="file": the train records (.jsonl/.json/.parquet file, or a folder of them).
    test_path:   with source="file": the test records.
    reward_mode: "all_pass" (reward 1.0 only if every test passes, the paper's setting) or
                 "pass_rate" (reward = fraction of tests passed, the verifier's dense mode).
    seed:        generator seed (42 reproduces the published split sizes and family counts).
    max_steps:   iterations before a robot is rejected as a possible infinite loop (verifier: 1000).
    """

    name: ClassVar[str] = "manufactoria-has"
    description: ClassVar[str] = ("Manufactoria-Has: write a factory program that accepts tapes containing a "
                                  "pattern (substring / subsequence / colour counts); 742 train / 132 test")

    def __init__(self, source: str = "generated", train_path: str | None = None, test_path: str | None = None,
                 reward_mode: RewardMode = "all_pass", seed: int = SEED, max_steps: int = MAX_STEPS) -> None:
        if reward_mode not in REWARD_MODES:
            raise UserError(f"reward_mode must be one of {', '.join(REWARD_MODES)}, got {reward_mode!r}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise UserError(f"seed must be an integer, got {seed!r}")
        if not isinstance(max_steps, int) or isinstance(max_steps, bool) or not 1 <= max_steps <= 100_000:
            raise UserError(f"max_steps must be an integer in 1..100000, got {max_steps!r}")
        if source not in SOURCES:
            raise UserError(f"manufactoria-has source must be one of {', '.join(SOURCES)}, got {source!r}")
        paths = {"train": train_path, "test": test_path}
        if source == "file" and not all(paths.values()):
            raise UserError("manufactoria-has source: file needs train_path and test_path (.jsonl/.json/.parquet "
                            "files or folders of them, exported from manufactoria/has_train and has_test)")
        if source != "file" and any(paths.values()):
            raise UserError("train_path/test_path are for source: file")
        self.source = source
        self.paths = paths
        self.reward_mode: RewardMode = reward_mode
        self.seed = seed
        self.max_steps = max_steps
        self._cache: dict[str, list[Task]] = {}

    def tasks(self, split: Split) -> list[Task]:
        if split not in ("train", "test"):
            raise UserError(f"split must be 'train' or 'test', got {split!r}")
        if split not in self._cache:
            self._cache[split] = self._load(split)
        return self._cache[split]

    def _load(self, split: str) -> list[Task]:
        if self.source == "generated":
            return [_problem_task(p) for p in generated_splits(self.seed)[split]]
        if self.source == "hf":
            where = HF_DATASETS[split]
            rows = load_records("hf", dataset=where, split="train")
        else:
            where = str(self.paths[split])
            rows = load_records("file", path=where)
        if not rows:
            raise UserError(f"{where}: no records")
        return [record_to_task(row, f"{where} row {i}") for i, row in enumerate(rows)]

    def reference_solution(self, task: Task) -> str | None:
        """A factory that passes every test, for generated tasks and for loaded ones whose criteria
        sentence is in the public wording (their criterion is known)."""
        raw = task.meta.get("criterion")
        if not isinstance(raw, dict):
            return None
        criterion = Criterion(family=raw["family"], pattern=raw.get("pattern", ""),
                              requirements=tuple((c, int(n)) for c, n in raw.get("requirements", [])))
        return f"```manufactoria\n{reference_program(criterion)}```"

    def score(self, task: Task, completion: str) -> Outcome:
        tests = task.meta.get("tests") or []
        return score_completion(completion, tests, reward_mode=self.reward_mode, max_steps=self.max_steps)
