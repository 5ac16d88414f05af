"""Manufactoria-Has (RESD paper §4.1, Table 1: 742 train / 132 test): build a factory that accepts
exactly the tapes with a property (contains a substring, a subsequence, or enough of some colours).

Sources: our own generator (default, offline, deterministic), a local `.jsonl`/`.parquet` file
in the Hugging Face record format, or the public `manufactoria/has_train` / `has_test` sets.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from resd.envs.base import Environment, Outcome, Split, Task
from resd.envs.manufactoria.dsl import MAX_STEPS
from resd.envs.manufactoria.generators import SEED, Criterion, Problem, generated_splits
from resd.envs.manufactoria.solutions import reference_program
from resd.envs.manufactoria.scoring import REWARD_MODES, RewardMode, score_completion
from resd.errors import UserError

HF_DATASETS = {"train": "manufactoria/has_train", "test": "manufactoria/has_test"}
SOURCES_HELP = ("source must be 'generated' (our offline generator, the default), 'hf' (the public "
                "manufactoria/has_train and has_test sets, needs internet), or a local .jsonl/.parquet "
                "path: a directory holding train/test files, a file path containing '{split}', or one "
                "file whose rows carry a split field")
_FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


def manual_text() -> str:
    """Our DSL manual (shipped as package data), the first part of every prompt."""
    return resources.files("resd.envs.manufactoria").joinpath("manual.md").read_text(encoding="utf-8")


def build_prompt(criteria: str) -> str:
    return (f"{manual_text().rstrip()}\n\n# Task\n"
            f"Design a factory, written in the language above, with this behaviour:\n\n{criteria}\n\n"
            f"Give the complete program in a ```manufactoria code block; only the last such block is run.")


def problem_to_record(problem: Problem) -> dict[str, Any]:
    """A generated problem in the Hugging Face record format (what `source=<file>` reads back)."""
    return {"messages": [{"role": "user", "content": build_prompt(problem.criteria)}],
            "ground_truth": [t.to_record() for t in problem.tests],
            "dataset": "manufactoria", "difficulty": "easy", "id": problem.id,
            "problem_family": problem.family, "name": problem.name, "criteria": problem.criteria}


def _problem_task(problem: Problem) -> Task:
    criterion = asdict(problem.criterion)
    criterion["requirements"] = [list(r) for r in problem.criterion.requirements]
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
    for case in tests:
        if not isinstance(case, dict) or "input" not in case or "expected_accepted" not in case:
            raise UserError(f"{where}: each test case needs 'input' and 'expected_accepted', got {case!r:.120}")
    prompt = [{"role": str(m.get("role", "user")), "content": str(m.get("content", ""))} for m in messages]
    user = next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
    task_id = record.get("id") or extra.get("index")
    if not task_id:
        raise UserError(f"{where}: the record has no 'id'")
    return Task(id=str(task_id), prompt=prompt,
                meta={"family": record.get("problem_family") or extra.get("problem_family", ""),
                      "name": record.get("name") or extra.get("name", ""),
                      "criteria": record.get("criteria") or _criteria_from_prompt(user),
                      "tests": [dict(c) for c in tests], "source": where.split(" row ")[0]})


def read_records(path: Path) -> list[dict[str, Any]]:
    """Rows of a .jsonl / .json / .parquet file."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # installed with `datasets`

        return pq.read_table(path).to_pylist()
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json" and text.lstrip().startswith("["):
        return list(json.loads(text))
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{n}: not a JSON line ({exc.msg})") from exc
    return rows


def _row_split(row: dict[str, Any]) -> str | None:
    return row.get("split") or (row.get("extra_info") or {}).get("split")


class ManufactoriaHas(Environment):
    """Manufactoria-Has with a judge that runs our own interpreter.

    source:      "generated" (default), "hf", or a local path (see SOURCES_HELP).
    reward_mode: "all_pass" (reward 1.0 only if every test passes, the paper's setting) or
                 "pass_rate" (reward = fraction of tests passed).
    seed:        generator seed (42 reproduces the published split sizes and family counts).
    max_steps:   node visits before a robot is rejected as a possible infinite loop.
    """

    name: ClassVar[str] = "manufactoria-has"
    description: ClassVar[str] = ("Manufactoria-Has: write a factory program that accepts tapes containing a "
                                  "pattern (substring / subsequence / colour counts); 742 train / 132 test")

    def __init__(self, source: str = "generated", reward_mode: RewardMode = "all_pass",
                 seed: int = SEED, max_steps: int = MAX_STEPS) -> None:
        if reward_mode not in REWARD_MODES:
            raise UserError(f"reward_mode must be one of {', '.join(REWARD_MODES)}, got {reward_mode!r}")
        if not isinstance(seed, int):
            raise UserError(f"seed must be an integer, got {seed!r}")
        if not isinstance(max_steps, int) or max_steps < 1:
            raise UserError(f"max_steps must be a positive integer, got {max_steps!r}")
        source = str(source)
        if source not in ("generated", "hf") and not self._path_exists(source):
            raise UserError(f"manufactoria-has source {source!r} is not a known name or an existing path; "
                            f"{SOURCES_HELP}")
        self.source = source
        self.reward_mode: RewardMode = reward_mode
        self.seed = seed
        self.max_steps = max_steps
        self._cache: dict[str, list[Task]] = {}

    @staticmethod
    def _path_exists(source: str) -> bool:
        if "{split}" in source:
            return all(Path(source.format(split=s)).exists() for s in ("train", "test"))
        return Path(source).exists()

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
            return self._load_hf(split)
        return self._load_local(split)

    def _load_hf(self, split: str) -> list[Task]:
        name = HF_DATASETS[split]
        try:
            import datasets

            rows = datasets.load_dataset(name, split="train")
        except Exception as exc:  # offline, hub errors, missing auth: all fixable by the user
            raise UserError(f"could not load {name} from the Hugging Face hub ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}). Without internet use "
                            f"source='generated' (the default) or a local .jsonl/.parquet copy") from exc
        return [record_to_task(dict(row), f"{name} row {i}") for i, row in enumerate(rows)]

    def _split_file(self, split: str) -> Path | None:
        if "{split}" in self.source:
            return Path(self.source.format(split=split))
        root = Path(self.source)
        if not root.is_dir():
            return None
        found = sorted(p for p in root.iterdir() if p.suffix in _FILE_SUFFIXES and split in p.stem)
        if len(found) != 1:
            raise UserError(f"{root}: expected exactly one {'/'.join(_FILE_SUFFIXES)} file with {split!r} in "
                            f"its name, found {[p.name for p in found] or 'none'}")
        return found[0]

    def _load_local(self, split: str) -> list[Task]:
        path = self._split_file(split)
        if path is not None:
            rows = read_records(path)
        else:
            path = Path(self.source)
            all_rows = read_records(path)
            if not any(_row_split(r) for r in all_rows):
                raise UserError(f"{path}: rows carry no 'split' (or extra_info.split) field, so train and test "
                                f"cannot be told apart; {SOURCES_HELP}")
            rows = [r for r in all_rows if _row_split(r) == split]
        if not rows:
            raise UserError(f"{path}: no {split} rows found")
        return [record_to_task(r, f"{path} row {i}") for i, r in enumerate(rows)]

    def reference_solution(self, task: Task) -> str | None:
        """A factory that passes every test, for generated tasks (their criterion is known)."""
        raw = task.meta.get("criterion")
        if not isinstance(raw, dict):
            return None
        criterion = Criterion(family=raw["family"], pattern=raw.get("pattern", ""),
                              requirements=tuple((c, int(n)) for c, n in raw.get("requirements", [])))
        return f"```manufactoria\n{reference_program(criterion)}```"

    def score(self, task: Task, completion: str) -> Outcome:
        tests = task.meta.get("tests") or []
        return score_completion(completion, tests, reward_mode=self.reward_mode, max_steps=self.max_steps)
