"""BouncingSim-Easy / -Medium (RESD paper §4.1, Table 1: 640/100 and 320/100): write
`predict_position(t)` for regular polygons bouncing inside a regular polygon.

The paper's task is the MULTI_OBJ family of the RL-Grok BouncingSim benchmark, which the paper's
code reads from the Hugging Face hub (`bouncingsim/bouncingsim-MULTIOBJ-{easy,medium}`). Tasks
come from one of three sources, all in that hub record schema (one `record_task` serves all):

- "generated" (default): our own generator of official-style scenes (`resd.envs.bouncing.scene`)
  with ground truth from Box2D, the official engine (`resd.envs.bouncing.engine`);
- "hf": the hub dataset itself (`dataset`, default the paper's one for the difficulty);
- "file": the same records from a local export, read through `resd.envs.records.load_records`:
  `path`, a folder holding `train.jsonl` and `test.jsonl` (what `python -m resd.envs.bouncingsim`
  writes; any `train*`/`test*` .jsonl/.json/.parquet file, or `train/` and `test/` folders, e.g. the
  hub's `data/train-00000-of-00001.parquet`), or `train_path` / `test_path` given one by one.

Candidate programs run in the OS sandbox (`resd.envs.sandbox`) through a small harness
(`resd.envs.bouncing.harness`); verdicts and feedback come from `resd.envs.bouncing.judge`.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import secrets
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from resd.envs.base import Environment, Outcome, Split, Task
from resd.envs.bouncing import judge
from resd.envs.bouncing.harness import RESULT_MARKER, SOLUTION_FILE
from resd.envs.bouncing.prompt import CALL_TIME_LIMIT, TOLERANCE, scene_prompt
from resd.envs.bouncing.scene import EASY, MEDIUM, Body, Difficulty, Scene, draw_scene
from resd.envs.records import load_records
from resd.envs.sandbox import require, run_python
from resd.envs.text import MAX_COMPLETION_CHARS
from resd.errors import UserError
from resd.files import cache_dir, read_jsonl, write_text_atomic

REWARD_MODES = ("all", "fraction")
SOURCES = ("generated", "hf", "file")
SANDBOX_SLACK_S = 5.0
"""Wall-clock allowance on top of 1 s per timestamp: interpreter start-up and the harness."""
RECORD_DATASET = "ballsim"
"""The `dataset` field of every record (the hub's value)."""
ASSERT_PATTERN = re.compile(
    r"\s*assert\s+check_distance\(\s*predict_position\(\s*([0-9]*\.?[0-9]+)\s*\)\s*,\s*(\[.*\])\s*\)"
    r"\s*<=\s*([0-9]*\.?[0-9]+)\s*")
"""One test of a record: `assert check_distance(predict_position(T), [[x, y], ...]) <= TOL` (the
hub's format; any other text is refused rather than executed)."""


def _package_text(name: str) -> str:
    return resources.files("resd.envs.bouncing").joinpath(name).read_text(encoding="utf-8")


# --- records (the hub's schema) -----------------------------------------------------------------

def assertion_text(t: float, expected: list[list[float]], tolerance: float = TOLERANCE) -> str:
    """One test in the hub's assert-string format."""
    positions = [[round(float(x), 2), round(float(y), 2)] for x, y in expected]
    return f"assert check_distance(predict_position({t:.2f}), {positions}) <= {tolerance}"


def parse_assertion(text: Any) -> dict[str, Any]:
    """{"t", "expected", "tolerance"} of one hub test; UserError for anything else."""
    match = ASSERT_PATTERN.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise UserError(f"not a BouncingSim test assertion: {str(text)[:120]!r}")
    try:
        expected = ast.literal_eval(match.group(2))
        points = [[float(x), float(y)] for x, y in expected]
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
        raise UserError(f"bad expected positions in {text[:120]!r}") from exc
    if not points:
        raise UserError(f"no expected positions in {text[:120]!r}")
    return {"t": float(match.group(1)), "expected": points, "tolerance": float(match.group(3))}


def scene_record(scene: Scene, truth: list[list[list[float]]], difficulty: Difficulty, index: int) -> dict[str, Any]:
    """A generated scene as a hub record (plus `scene_config`, which the hub's formatter also reads)."""
    return {
        "messages": [{"role": "user", "content": scene_prompt(scene)}],
        "ground_truth": [assertion_text(t, p) for t, p in zip(scene.timestamps, truth, strict=True)],
        "dataset": RECORD_DATASET,
        "id": f"G_{difficulty.level}_{index + 1}",
        "difficulty": difficulty.level,
        "timestamps": list(scene.timestamps),
        "tolerance": TOLERANCE,
        "prompt_setting": "function",
        "scene_config": scene.to_config(),
    }


_CONTAINER_LINE = re.compile(r"Container 1: regular polygon with (\d+) sides, radius ([0-9.]+)m, "
                             r"center at \((-?[0-9.]+), (-?[0-9.]+)\); initial orientation 0\.000 rad\s*$", re.M)
_BALL_LINE = re.compile(r"Ball \d+: regular polygon \((\d+) sides\), radius ([0-9.]+)m, initial position "
                        r"\((-?[0-9.]+), (-?[0-9.]+)\), initial velocity \((-?[0-9.e+-]+), (-?[0-9.e+-]+)\) m/s, "
                        r"no angular velocity\s*$", re.M)


def scene_from_prompt(text: str, timestamps: tuple[float, ...]) -> Scene | None:
    """The scene stated by a hub prompt (the official wording's numbers), for records that carry
    no `scene_config`; None unless it is exactly one fixed container and non-spinning polygons."""
    container = _CONTAINER_LINE.findall(text)
    balls = _BALL_LINE.findall(text)
    if len(container) != 1 or not balls or "no effective gravity" not in text or "Container 2" in text:
        return None
    sides, radius, cx, cy = container[0]
    if len({r for _, r, *_ in balls}) != 1:
        return None
    try:
        return Scene(container_sides=int(sides), container_center=(float(cx), float(cy)),
                     container_radius=float(radius), object_radius=float(balls[0][1]), timestamps=timestamps,
                     bodies=tuple(Body(int(s), (float(x), float(y)), (float(vx), float(vy)))
                                  for s, _, x, y, vx, vy in balls))
    except ValueError:
        return None


def record_task(record: dict[str, Any], task_id: str, split: str) -> Task:
    """The Task of one hub-schema record: its messages, its tests, and its scene when known."""
    messages = record.get("messages") or record.get("prompt")
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "content" in m for m in messages):
        raise UserError(f"record {record.get('id')!r} has no chat `messages`")
    tests = record.get("ground_truth")
    if tests is None and isinstance(record.get("reward_model"), dict):  # the official formatter's layout
        tests = record["reward_model"].get("ground_truth")
    if isinstance(tests, str):  # the formatted (verl) parquet stores the list as JSON text
        try:
            tests = json.loads(tests)
        except ValueError as exc:  # the compressed-pickle form is refused: records never unpickle
            raise UserError(f"record {record.get('id')!r}: ground_truth is neither a list nor JSON") from exc
    if not isinstance(tests, list) or not tests:
        raise UserError(f"record {record.get('id')!r} has no ground_truth tests")
    parsed = [parse_assertion(t) for t in tests]
    timestamps = tuple(p["t"] for p in parsed)
    scene = None
    if record.get("scene_config"):
        try:
            scene = Scene.from_config(record["scene_config"], timestamps)
        except ValueError:
            scene = None
    if scene is None:
        scene = scene_from_prompt(str(messages[-1].get("content", "")), timestamps)
    if scene is not None and len(scene.bodies) != len(parsed[0]["expected"]):
        scene = None
    info = record.get("extra_info") if isinstance(record.get("extra_info"), dict) else {}
    meta = {"tests": parsed, "split": split, "record_id": str(record.get("id", info.get("index", ""))),
            "difficulty": record.get("difficulty", info.get("difficulty")), "timestamps": list(timestamps),
            "scene": scene.to_config() if scene is not None else None}
    return Task(id=task_id, prompt=[{"role": str(m.get("role", "user")), "content": str(m["content"])}
                                    for m in messages], meta=meta)


def generated_records(difficulty: Difficulty, split: str, seed: int, size: int) -> list[dict[str, Any]]:
    """Records of our generator: scene i depends only on (difficulty, split, seed, i).

    Drawing a scene runs Box2D at dt = 1/4000 (and the step-size check at 1/3000): ~0.05 s each,
    half a minute for a default split. The records are deterministic, so they are kept in resd's
    cache (`resd.files.cache_dir("bouncingsim")`) under a key naming the generator's source and the
    Box2D version; an unreadable or mismatched entry is a miss and is drawn again."""
    path = cache_dir("bouncingsim") / f"{difficulty.name}-{split}-{seed}-{size}-{_generator_fingerprint()}.jsonl"
    try:
        rows = read_jsonl(path)
    except (UserError, OSError):
        rows = []
    if len(rows) == size and all(r.get("id") == f"G_{difficulty.level}_{i + 1}" for i, r in enumerate(rows)):
        return rows
    rows = []
    for i in range(size):
        scene, truth = draw_scene(difficulty, f"bouncingsim/{difficulty.name}/{split}/{seed}/{i}")
        rows.append(scene_record(scene, truth, difficulty, i))
    try:
        write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    except OSError:  # a read-only or full disk: the records are still right, only not kept
        pass
    return json.loads(json.dumps(rows))  # the same JSON form a cached read returns


@lru_cache(maxsize=1)
def _generator_fingerprint() -> str:
    """A short hash of what decides a generated record: this module, the scene, engine and prompt
    code, and the Box2D version."""
    import Box2D

    digest = hashlib.sha256(Path(__file__).read_bytes())
    for name in ("scene.py", "engine.py", "prompt.py"):
        digest.update(_package_text(name).encode("utf-8"))
    digest.update(str(getattr(Box2D, "__version__", "")).encode("utf-8"))
    return digest.hexdigest()[:16]


def split_path(root: str | None, split: str) -> str | None:
    """The record file or folder of one split inside an export folder, or None."""
    if not root:
        return None
    base = Path(root)
    if not base.is_dir():
        raise UserError(f"path {root!r} is not a folder (name one split's file with train_path / test_path)")
    if (base / split).is_dir():
        return str(base / split)
    files = sorted(p for p in base.rglob(f"{split}*") if p.is_file() and p.suffix in (".jsonl", ".json", ".parquet")
                   and (p.stem == split or p.stem.startswith(f"{split}-")))
    if not files:
        return None
    if len(files) > 1:  # shards: load_records reads a whole folder, which may hold the other split too
        raise UserError(f"{root}: several {split} record files ({', '.join(str(p) for p in files[:3])}); "
                        f"put them in a folder of their own and name it with {split}_path")
    return str(files[0])


def write_records(records: list[dict[str, Any]], path: str | Path) -> Path:
    """Write records as JSON Lines (what `source: file` reads back)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def reference_program(scene: Scene) -> str:
    """A pure-`math` program that solves the scene exactly: the event-driven simulator in
    `resd/envs/bouncing/polygons.py`, verbatim, plus a predict_position holding the scene."""
    return (_package_text("polygons.py").rstrip() + "\n\n\n"
            "def predict_position(t):\n"
            f"    sides = {[b.sides for b in scene.bodies]!r}\n"
            f"    positions = {[list(b.position) for b in scene.bodies]!r}\n"
            f"    velocities = {[list(b.velocity) for b in scene.bodies]!r}\n"
            f"    return simulate({scene.container_sides!r}, {list(scene.container_center)!r}, "
            f"{scene.container_radius!r}, {scene.object_radius!r}, sides, positions, velocities, t)\n")


class BouncingSim(Environment):
    """Multi-object BouncingSim at one difficulty.

    source:      "generated" (default), "hf" or "file" (see the module docstring).
    dataset:     hub dataset id for source "hf" (default: the paper's, bouncingsim/bouncingsim-MULTIOBJ-<level>).
    path:        for source "file": a folder with the splits' record files (see the module docstring).
    train_path / test_path: for source "file": one split's record file or folder (overrides `path`;
                 a split with neither is empty).
    seed:        base seed of the generator; every scene depends only on (difficulty, split, seed, index).
    train_size:  number of training tasks (paper: 640 easy, 320 medium); for hub/file records, the
                 first train_size records (default: all).
    test_size:   number of test tasks (paper: 100); as train_size.
    reward_mode: "all" (1.0 only when every timestamp passes: the paper's reward, and the official
                 runs' sparse_rewards=True) or "fraction" (reward = fraction passed).
    workers:     sandboxed programs run in parallel by score_many (default: CPU count).
    sandbox:     "bwrap" (default) or "unsafe-local" (resd.envs.sandbox); the expected positions
                 stay on the host, the program only returns its own.
    """

    difficulty: ClassVar[Difficulty] = EASY
    default_train_size: ClassVar[int] = 640
    default_test_size: ClassVar[int] = 100
    hub_dataset: ClassVar[str] = "bouncingsim/bouncingsim-MULTIOBJ-easy"

    def __init__(self, seed: int = 0, train_size: int | None = None, test_size: int | None = None,
                 reward_mode: str = "all", workers: int | None = None, sandbox: str | None = None,
                 source: str = "generated", dataset: str | None = None, path: str | None = None,
                 train_path: str | None = None, test_path: str | None = None) -> None:
        if reward_mode not in REWARD_MODES:
            raise UserError(f"reward_mode must be one of {', '.join(REWARD_MODES)}, got {reward_mode!r}")
        if source not in SOURCES:
            raise UserError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
        if source == "file" and not (path or train_path or test_path):
            raise UserError("source: file needs `path` (a folder with train/test record files) or "
                            "train_path / test_path")
        requested = {"train": train_size, "test": test_size}
        for split, size in requested.items():
            if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
                raise UserError(f"{split}_size must be a non-negative integer, got {size!r}")
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise UserError(f"workers must be a positive integer, got {workers!r}")
        self.seed = int(seed)
        self.source = source
        self.dataset = dataset or self.hub_dataset
        self.paths = {"train": train_path or split_path(path, "train"), "test": test_path or split_path(path, "test")}
        self.requested_sizes = requested
        self.reward_mode = reward_mode
        self.workers = workers or os.cpu_count() or 1
        self.sandbox = require(sandbox).mode
        self._tasks: dict[str, list[Task]] = {}
        self._records: dict[str, list[dict[str, Any]]] = {}

    # --- tasks -------------------------------------------------------------------------------
    def _generated_size(self, split: str) -> int:
        size = self.requested_sizes[split]
        return (self.default_train_size if split == "train" else self.default_test_size) if size is None else size

    def records(self, split: Split) -> list[dict[str, Any]]:
        """The split's records in the hub schema (generated, downloaded or read from files)."""
        if split not in ("train", "test"):
            raise UserError(f"split must be 'train' or 'test', got {split!r}")
        if split not in self._records:
            if self.source == "generated":
                rows = generated_records(self.difficulty, split, self.seed, self._generated_size(split))
            elif self.source == "hf":
                rows = load_records("hf", dataset=self.dataset, split=split)
            else:
                rows = load_records("file", path=self.paths[split]) if self.paths[split] else []
            limit = self.requested_sizes[split]
            self._records[split] = rows if self.source == "generated" or limit is None else rows[:limit]
        return self._records[split]

    def tasks(self, split: Split) -> list[Task]:
        if split not in self._tasks:
            self._tasks[split] = [record_task(r, f"{self.name}-{split}-{i:04d}", split)
                                  for i, r in enumerate(self.records(split))]
        return self._tasks[split]

    def sizes(self) -> dict[str, int]:
        if self.source == "generated":  # known without drawing any scene
            return {split: self._generated_size(split) for split in ("train", "test")}
        return {split: len(self.records(split)) for split in ("train", "test")}

    @staticmethod
    def scene(task: Task) -> Scene | None:
        """The task's scene, when its record states one (generated records always do)."""
        config = task.meta.get("scene")
        if not config:
            return None
        try:
            return Scene.from_config(config, tuple(task.meta["timestamps"]))
        except (KeyError, ValueError):
            return None

    @staticmethod
    def tests(task: Task) -> list[dict[str, Any]]:
        try:
            tests = task.meta["tests"]
        except KeyError as exc:
            raise UserError(f"task {task.id!r} carries no BouncingSim tests in meta['tests']") from exc
        return tests

    def reference_solution(self, task: Task) -> str | None:
        """A completion that passes every timestamp: a short answer with the exact program
        (None for a record whose scene cannot be read)."""
        scene = self.scene(task)
        if scene is None:
            return None
        return ("The balls only translate, so between contacts they move in straight lines. I jump from "
                "one contact to the next: a swept separating-axis test gives the first polygon-polygon "
                "contact, the nearest vertex gives the first wall contact, and an elastic impulse with "
                "masses equal to the areas resolves each.\n\n"
                f"```python\n{reference_program(scene)}```\n")

    # --- scoring -----------------------------------------------------------------------------
    def score(self, task: Task, completion: str) -> Outcome:
        return self.score_many([task], [completion])[0]

    def score_many(self, tasks: list[Task], completions: list[str]) -> list[Outcome]:
        if len(tasks) != len(completions):
            raise ValueError(f"{len(tasks)} tasks but {len(completions)} completions")
        # Parsing stays on this thread (CPython 3.11's ast.parse is not thread-safe); only the
        # sandboxed runs, which wait on child processes, go to threads.
        tests = [self.tests(t) for t in tasks]
        outcomes: list[Outcome | None] = [self._refusal(ts, c) for ts, c in zip(tests, completions)]
        todo = [i for i, o in enumerate(outcomes) if o is None]
        programs = [judge.extract_program(completions[i]) or "" for i in todo]
        workers = min(self.workers, len(todo)) or 1
        if workers == 1:
            runs = [self._run(p, tests[i]) for p, i in zip(programs, todo)]
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bouncingsim") as pool:
                runs = list(pool.map(self._run, programs, [tests[i] for i in todo]))
        for i, results in zip(todo, runs):
            outcomes[i] = judge.outcome(judge.check_tests(tests[i], results), self.reward_mode)
        return [o for o in outcomes if o is not None]

    def _refusal(self, tests: list[dict[str, Any]], completion: str) -> Outcome | None:
        """The verdict for a completion that is not run at all (no code, syntax, forbidden), else None."""
        if not isinstance(completion, str) or len(completion) > MAX_COMPLETION_CHARS:
            return judge.no_program(len(tests), f"The answer is over the judge's limit of {MAX_COMPLETION_CHARS} "
                                                f"characters; nothing was run.")
        program = judge.extract_program(completion)
        if program is None:
            return judge.no_program(len(tests))
        problem = judge.static_problems(program)
        if problem is None:
            return None
        outcome = judge.outcome(judge.refused_checks(tests, problem), self.reward_mode)
        outcome.details["error"] = "syntax" if problem.startswith("SyntaxError") else "forbidden"
        return outcome

    def _run(self, program: str, tests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Harness results, one per test; a run that dies is reported for every test."""
        n = len(tests)
        nonce = secrets.token_hex(8)
        request = json.dumps({"times": [t["t"] for t in tests], "limit": CALL_TIME_LIMIT, "nonce": nonce})
        marker = f"{RESULT_MARKER}{nonce} "
        result = run_python(_package_text("harness.py"), stdin=request, files={SOLUTION_FILE: program},
                            wall_time=n * CALL_TIME_LIMIT + SANDBOX_SLACK_S, memory_mb=512,
                            max_output_bytes=200_000, mode=self.sandbox)
        for line in reversed(result.stdout.splitlines()):
            if line.startswith(marker):
                parsed = judge.parse_results(line[len(marker):], n, len(tests[0]["expected"]))
                if parsed is not None:
                    return parsed
        if result.limit == "wall_time":
            message = "the program ignored the time limit and was stopped"
            return [{"status": "timeout", "message": message}] * n
        tail = (result.stderr.strip() or f"exit code {result.exit_code}")[-600:]
        why = f"the sandbox stopped the program ({result.limit}): {tail}" if result.limit else tail
        return [{"status": "error", "message": why}] * n


class BouncingSimEasy(BouncingSim):
    """BouncingSim-Easy: 3 polygons at speed 400-600 in a 3-6 sided container (640 train / 100 test)."""

    name: ClassVar[str] = "bouncingsim-easy"
    description: ClassVar[str] = ("BouncingSim-Easy: write predict_position(t) for 3 polygons bouncing in a polygon; "
                                  "15 timestamps 0.1-1.5 s, pass at mean distance <= 50; 640 train / 100 test")
    difficulty: ClassVar[Difficulty] = EASY
    default_train_size: ClassVar[int] = 640
    hub_dataset: ClassVar[str] = "bouncingsim/bouncingsim-MULTIOBJ-easy"


class BouncingSimMedium(BouncingSim):
    """BouncingSim-Medium: 4-5 polygons at speed 600-800 (320 train / 100 test)."""

    name: ClassVar[str] = "bouncingsim-medium"
    description: ClassVar[str] = ("BouncingSim-Medium: write predict_position(t) for 4-5 fast polygons bouncing in "
                                  "a polygon; 15 timestamps 0.1-1.5 s, pass at mean distance <= 50; 320 train / 100 test")
    difficulty: ClassVar[Difficulty] = MEDIUM
    default_train_size: ClassVar[int] = 320
    hub_dataset: ClassVar[str] = "bouncingsim/bouncingsim-MULTIOBJ-medium"


def main(argv: list[str] | None = None) -> int:
    """`python -m resd.envs.bouncingsim OUT_DIR`: write generated records (train.jsonl, test.jsonl)
    in the hub schema, for `source: file` on another machine or for inspection."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m resd.envs.bouncingsim", description=main.__doc__)
    parser.add_argument("out_dir")
    parser.add_argument("--difficulty", choices=["easy", "medium"], default="easy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--test-size", type=int, default=None)
    args = parser.parse_args(argv)
    env_cls = BouncingSimEasy if args.difficulty == "easy" else BouncingSimMedium
    sizes = {"train": args.train_size if args.train_size is not None else env_cls.default_train_size,
             "test": args.test_size if args.test_size is not None else env_cls.default_test_size}
    for split, size in sizes.items():
        path = write_records(generated_records(env_cls.difficulty, split, args.seed, size),
                             Path(args.out_dir) / f"{split}.jsonl")
        print(f"{size} {split} records -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
