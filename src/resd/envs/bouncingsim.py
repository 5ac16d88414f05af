"""BouncingSim-Easy / -Medium (RESD paper §4.1, Table 1: 640/100 and 320/100): write
`predict_position(t)` for balls bouncing inside a polygon.

Our own generator of MULTI_OBJ-style scenes (`resd.envs.bouncing.scene`), ground truth from the
pymunk physics engine (`resd.envs.bouncing.engine`), candidate programs run in the sandbox
(`resd.envs.sandbox`) through a small harness (`resd.envs.bouncing.harness`), verdicts and
feedback from `resd.envs.bouncing.judge`. Everything is deterministic in (difficulty, split,
seed, index); scenes are drawn when a split is first asked for and the engine runs when a task
is first scored.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any, ClassVar

from resd.envs.base import Environment, Outcome, Split, Task
from resd.envs.bouncing import judge
from resd.envs.bouncing.engine import GroundTruth, ground_truth
from resd.envs.bouncing.harness import RESULT_MARKER, SOLUTION_FILE
from resd.envs.bouncing.prompt import CALL_TIME_LIMIT, TOLERANCE, scene_prompt
from resd.envs.bouncing.scene import EASY, MEDIUM, Difficulty, Scene, draw_scene
from resd.envs.sandbox import require, run_python
from resd.envs.text import MAX_COMPLETION_CHARS
from resd.errors import UserError

REWARD_MODES = ("all", "fraction")
SANDBOX_SLACK_S = 5.0
"""Wall-clock allowance on top of 1 s per timestamp: interpreter start-up and the harness."""


def _package_text(name: str) -> str:
    return resources.files("resd.envs.bouncing").joinpath(name).read_text(encoding="utf-8")


def reference_program(scene: Scene) -> str:
    """A pure-`math` program that solves the scene exactly: the event-driven simulator in
    `resd/envs/bouncing/elastic.py`, verbatim, plus a predict_position holding the scene."""
    data = scene.to_dict()
    return (_package_text("elastic.py").rstrip() + "\n\n\n"
            "def predict_position(t):\n"
            f"    vertices = {data['vertices']!r}\n"
            f"    positions = {data['positions']!r}\n"
            f"    velocities = {data['velocities']!r}\n"
            f"    return simulate(vertices, {scene.radius!r}, positions, velocities, t)\n")


class BouncingSim(Environment):
    """Multi-ball BouncingSim at one difficulty.

    seed:        base seed; every task's scene depends only on (difficulty, split, seed, index).
    train_size:  number of training scenes (paper: 640 easy, 320 medium).
    test_size:   number of test scenes (paper: 100).
    reward_mode: "all" (1.0 only when all 15 timestamps pass, the paper's reward) or "fraction"
                 (reward = fraction passed).
    workers:     sandboxed programs run in parallel by score_many (default: CPU count).
    sandbox:     "bwrap" (default) or "unsafe-local" (resd.envs.sandbox); the ground truth and the
                 physics engine stay on the host, the program only returns positions.
    """

    difficulty: ClassVar[Difficulty] = EASY
    default_train_size: ClassVar[int] = 640
    default_test_size: ClassVar[int] = 100

    def __init__(self, seed: int = 0, train_size: int | None = None, test_size: int | None = None,
                 reward_mode: str = "all", workers: int | None = None, sandbox: str | None = None) -> None:
        if reward_mode not in REWARD_MODES:
            raise UserError(f"reward_mode must be one of {', '.join(REWARD_MODES)}, got {reward_mode!r}")
        sizes = {"train": self.default_train_size if train_size is None else train_size,
                 "test": self.default_test_size if test_size is None else test_size}
        for split, size in sizes.items():
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise UserError(f"{split}_size must be a non-negative integer, got {size!r}")
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise UserError(f"workers must be a positive integer, got {workers!r}")
        self.seed = int(seed)
        self.split_sizes = sizes
        self.reward_mode = reward_mode
        self.workers = workers or os.cpu_count() or 1
        self.sandbox = require(sandbox).mode
        self._tasks: dict[str, list[Task]] = {}
        self._truth: dict[str, GroundTruth] = {}
        self._lock = threading.Lock()

    # --- tasks -------------------------------------------------------------------------------
    def tasks(self, split: Split) -> list[Task]:
        if split not in ("train", "test"):
            raise UserError(f"split must be 'train' or 'test', got {split!r}")
        if split not in self._tasks:
            self._tasks[split] = [self._make_task(split, i) for i in range(self.split_sizes[split])]
        return self._tasks[split]

    def sizes(self) -> dict[str, int]:
        return dict(self.split_sizes)  # known without drawing any scene

    def _make_task(self, split: str, index: int) -> Task:
        task_id = f"{self.name}-{split}-{index:04d}"
        scene = draw_scene(self.difficulty, f"bouncingsim/{self.difficulty.name}/{split}/{self.seed}/{index}")
        return Task(id=task_id, prompt=[{"role": "user", "content": scene_prompt(scene)}],
                    meta={"scene": scene.to_dict(), "difficulty": self.difficulty.name, "split": split,
                          "timestamps": list(scene.timestamps), "tolerance": TOLERANCE})

    @staticmethod
    def scene(task: Task) -> Scene:
        try:
            return Scene.from_dict(task.meta["scene"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"task {task.id!r} carries no BouncingSim scene in meta['scene']") from exc

    def ground_truth(self, task: Task) -> GroundTruth:
        """Engine positions at the task's timestamps (computed once per task, then cached)."""
        key = json.dumps(task.meta.get("scene"), sort_keys=True)
        with self._lock:
            cached = self._truth.get(key)
        if cached is None:
            cached = ground_truth(self.scene(task))
            with self._lock:
                self._truth[key] = cached
        return cached

    def reference_solution(self, task: Task) -> str:
        """A completion that passes every timestamp: a short answer with the exact program."""
        return ("Between collisions every ball moves in a straight line, so I advance the state from "
                "one collision to the next and apply the elastic rules at each.\n\n"
                f"```python\n{reference_program(self.scene(task))}```\n")

    # --- scoring -----------------------------------------------------------------------------
    def score(self, task: Task, completion: str) -> Outcome:
        return self.score_many([task], [completion])[0]

    def score_many(self, tasks: list[Task], completions: list[str]) -> list[Outcome]:
        if len(tasks) != len(completions):
            raise ValueError(f"{len(tasks)} tasks but {len(completions)} completions")
        # Parsing and the physics engine stay on this thread (CPython 3.11's ast.parse is not
        # thread-safe); only the sandboxed runs, which wait on child processes, go to threads.
        scenes = [self.scene(t) for t in tasks]
        outcomes: list[Outcome | None] = [self._refusal(s, c) for s, c in zip(scenes, completions)]
        todo = [i for i, o in enumerate(outcomes) if o is None]
        truths = {i: self.ground_truth(tasks[i]).positions for i in todo}
        programs = [judge.extract_program(completions[i]) or "" for i in todo]
        workers = min(self.workers, len(todo)) or 1
        if workers == 1:
            runs = [self._run(p, scenes[i]) for p, i in zip(programs, todo)]
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bouncingsim") as pool:
                runs = list(pool.map(self._run, programs, [scenes[i] for i in todo]))
        for i, results in zip(todo, runs):
            checks = judge.check_timestamps(scenes[i], truths[i], results)
            outcomes[i] = judge.outcome(scenes[i], checks, self.reward_mode)
        return [o for o in outcomes if o is not None]

    @staticmethod
    def _refusal(scene: Scene, completion: str) -> Outcome | None:
        """The verdict for a completion that is not run at all (no code, syntax, forbidden), else None."""
        n = len(scene.timestamps)
        if len(completion) > MAX_COMPLETION_CHARS:
            return judge.refused(f"the answer is {len(completion)} characters long, over the judge's limit of "
                                 f"{MAX_COMPLETION_CHARS}", "format", n)
        program = judge.extract_program(completion)
        if program is None:
            reason = ("the ```python block is never closed (was the reply cut off?); end it with ```"
                      if "```python" in completion.lower() else
                      "no ```python code block found; put the complete program in one")
            return judge.refused(reason, "format", n)
        problem = judge.static_problems(program)
        if problem is None:
            return None
        kind = "syntax" if problem.startswith("SyntaxError") else "forbidden"
        return judge.refused(f"the program was not run: {problem}", kind, n)

    def _run(self, program: str, scene: Scene) -> list[dict[str, Any]]:
        """Harness results, one per timestamp; a run that dies is reported for every timestamp."""
        n = len(scene.timestamps)
        nonce = secrets.token_hex(8)
        request = json.dumps({"times": list(scene.timestamps), "limit": CALL_TIME_LIMIT, "nonce": nonce})
        marker = f"{RESULT_MARKER}{nonce} "
        result = run_python(_package_text("harness.py"), stdin=request, files={SOLUTION_FILE: program},
                            wall_time=n * CALL_TIME_LIMIT + SANDBOX_SLACK_S, memory_mb=512,
                            max_output_bytes=200_000, mode=self.sandbox)
        for line in reversed(result.stdout.splitlines()):
            if line.startswith(marker):
                parsed = judge.parse_results(line[len(marker):], n, len(scene.positions))
                if parsed is not None:
                    return parsed
        if result.limit == "wall_time":
            message = "the program ignored the 1 s limit and was stopped"
            return [{"status": "timeout", "message": message}] * n
        tail = (result.stderr.strip() or f"exit code {result.exit_code}")[-600:]
        why = f"the sandbox stopped the program ({result.limit}): {tail}" if result.limit else tail
        return [{"status": "error", "message": why}] * n


class BouncingSimEasy(BouncingSim):
    """BouncingSim-Easy: 3 balls at speed 400-600 in a 3-6 sided container (640 train / 100 test)."""

    name: ClassVar[str] = "bouncingsim-easy"
    description: ClassVar[str] = ("BouncingSim-Easy: write predict_position(t) for 3 balls bouncing in a polygon; "
                                  "15 timestamps, pass at mean distance <= 50; 640 train / 100 test")
    difficulty: ClassVar[Difficulty] = EASY
    default_train_size: ClassVar[int] = 640


class BouncingSimMedium(BouncingSim):
    """BouncingSim-Medium: 4-5 balls at speed 600-800 (320 train / 100 test)."""

    name: ClassVar[str] = "bouncingsim-medium"
    description: ClassVar[str] = ("BouncingSim-Medium: write predict_position(t) for 4-5 fast balls bouncing in a "
                                  "polygon; 15 timestamps, pass at mean distance <= 50; 320 train / 100 test")
    difficulty: ClassVar[Difficulty] = MEDIUM
    default_train_size: ClassVar[int] = 320
