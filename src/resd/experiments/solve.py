"""`resd solve`: test-time self-distillation on one hard task (the SDPO paper's test-time setting, arXiv 2601.20802).

Attempt -> environment feedback -> reflection and playbook (RESD) -> one self-distillation update
on that attempt -> retry, K times. This is exactly the trainer's inner loop with a batch of one
prompt and K = attempts, so it runs on `RESDTrainer` itself: the task is wrapped as a
one-task environment, the stream is that task alone, and every policy update is logged to the
run directory like any training run (metrics.jsonl: one line per attempt).

Test-time defaults differ from training on two knobs only: learning rate 1e-5 without warm-up
(the paper's 1e-6 with 10 warm-up steps would barely move the weights within ten attempts).
A `--config` file or `--set key=value` overrides them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from resd.envs.base import Environment, Outcome, Split, Task
from resd.errors import UserError

SOLVE_DEFAULTS: dict[str, Any] = {"learning_rate": 1e-5, "warmup_steps": 0}
"""Test-time defaults applied unless the config file or an override sets the key."""


class OneTaskEnv(Environment):
    """One task of another environment, served as both the train and the test split."""

    name = "one-task"
    description = "a single task of another environment (test-time self-distillation)"

    def __init__(self, inner: Environment, task_id: str) -> None:
        self.inner = inner
        self.task = inner.task_by_id(task_id)

    def tasks(self, split: Split) -> list[Task]:
        return [self.task]

    def score(self, task: Task, completion: str) -> Outcome:
        return self.inner.score(task, completion)

    def score_many(self, tasks: list[Task], completions: list[str]) -> list[Outcome]:
        return self.inner.score_many(tasks, completions)


@dataclass
class Attempt:
    """One attempt as the trainer logged it (before that attempt's update)."""

    number: int
    reward: float
    acc: float
    solved: bool
    loss: float | None
    playbook_size: int
    seconds: float


@dataclass
class SolveResult:
    task_id: str
    attempts: list[Attempt]
    run_dir: Path
    final_eval: dict[str, Any] | None
    """The adapted model's evaluation on the task after the last attempt (k samples)."""

    @property
    def first_success(self) -> int | None:
        return next((a.number for a in self.attempts if a.solved), None)


def solve_config(*, env: str, task_id: str, attempts: int, method: str = "resd", model: str | None = None,
                 seed: int = 0, config_path: str | None = None, overrides: Sequence[str] = (),
                 output_dir: str | Path | None = None, eval_k: int = 4) -> Any:
    """The RESDConfig of a test-time run: one prompt, K = attempts inner updates, one rollout each."""
    from resd.train.config import load_config, read_yaml

    if attempts < 1:
        raise UserError(f"--attempts must be >= 1, got {attempts}")
    from_file = read_yaml(config_path) if config_path else {}
    overridden = {o.partition("=")[0].strip() for o in overrides}
    defaults = [f"{k}={v}" for k, v in SOLVE_DEFAULTS.items() if k not in from_file and k not in overridden]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    pinned: dict[str, Any] = {
        "env": env, "seed": seed, "batch_size": 1, "num_generations": 1, "shuffle": False, "max_batches": 1,
        "inner_updates": attempts, "early_stop": False, "max_steps": None,
        # No evaluation during the attempts (the rollouts are the measurement); the trainer still
        # evaluates once at the end, which is the adapted model's solve rate on this task.
        "eval_at_start": False, "eval_every": None, "eval_k": eval_k, "eval_limit": None,
        # One checkpoint at the end instead of one per attempt.
        "checkpoint_every": attempts,
        "output_dir": str(output_dir or Path("runs") / f"solve-{env.replace(':', '_')}-{_slug(task_id)}-seed{seed}-{stamp}"),
    }
    if model:
        pinned["model"] = model
    return load_config(config_path, [*defaults, *overrides], method=method, **pinned)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:60]


def solve(config: Any, *, model: Any = None, tokenizer: Any = None, env: Environment | None = None,
          task_id: str, keep_weights: bool = True) -> SolveResult:
    """Run the attempts with the trainer. Pass `model`/`tokenizer` to reuse a loaded model (it is
    trained in place: pass a copy to keep the original); `env` to reuse a built environment."""
    from resd.envs import get
    from resd.files import read_jsonl
    from resd.train.trainer import RESDTrainer

    inner = env if env is not None else get(config.env, **config.env_options)
    one = OneTaskEnv(inner, task_id)
    trainer = RESDTrainer(config, model=model, tokenizer=tokenizer, env=one)
    run_dir = trainer.train()
    trainer.close()
    attempts = [
        Attempt(number=int(m["step"]), reward=float(m["reward_mean"]), acc=float(m.get("acc_mean", m["reward_mean"])),
                solved=float(m["success_rate"]) > 0, loss=m.get("loss"), playbook_size=int(m.get("playbook_size", 0)),
                seconds=float(m.get("time/step", 0.0)))
        for m in read_jsonl(Path(run_dir) / "metrics.jsonl")
    ]
    evals = read_jsonl(Path(run_dir) / "eval.jsonl", missing_ok=True)
    if not keep_weights:
        shutil.rmtree(Path(run_dir) / "checkpoints", ignore_errors=True)
    return SolveResult(task_id=task_id, attempts=attempts, run_dir=Path(run_dir), final_eval=evals[-1] if evals else None)


def first_buffered_solution(run_dir: Path, task_id: str) -> str | None:
    """The solution the context engine stored for the task (RESD's solution buffer), if any."""
    from resd.context import SolutionBuffer

    snaps = sorted((run_dir / "playbooks").glob("step_*.json"))
    if not snaps:
        return None
    state = json.loads(snaps[-1].read_text(encoding="utf-8"))
    if not isinstance(state, dict) or "buffer" not in state:
        return None
    return SolutionBuffer.from_state_dict(state["buffer"]).get(task_id)


# ----------------------------------------------------------------------------------------------
# `resd solve`
# ----------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", required=True, help="environment name (`resd envs` lists them)")
    parser.add_argument("--task", required=True, dest="task_id", help="task id (`resd env show NAME` lists them)")
    parser.add_argument("--attempts", type=int, default=8, help="K: attempts, each followed by one update (default 8)")
    parser.add_argument("--method", default="resd", choices=["resd", "sdpo", "sdpo_ss"],
                        help="teacher construction: resd (reflection + playbook, default) or sdpo (feedback only)")
    parser.add_argument("--model", default=None, help="model spec (default: the config's, smollm2-135m)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default=None, help="YAML config (sampling, loss, context settings)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override (repeatable), e.g. --set max_completion_length=128")
    parser.add_argument("--out", default=None, help="run directory (default: runs/solve-<env>-<task>-...)")
    parser.add_argument("--no-weights", action="store_true", help="delete the adapted weights afterwards")
    parser.add_argument("--backend", choices=("hf", "vllm"), default=None,
                        help="generation engine (default: the config's, hf; vllm needs the extra, see the README)")


def run(args: argparse.Namespace) -> int:
    overrides = [*args.overrides, *([f"generation.backend={args.backend}"] if args.backend else [])]
    cfg = solve_config(env=args.env, task_id=args.task_id, attempts=args.attempts, method=args.method,
                       model=args.model, seed=args.seed, config_path=args.config, overrides=overrides,
                       output_dir=args.out)
    result = solve(cfg, task_id=args.task_id, keep_weights=not args.no_weights)
    print(f"\ntest-time self-distillation ({args.method}) on {args.env} task {args.task_id!r}, model {cfg.model}")
    print(f"{'attempt':>7} {'reward':>7} {'acc':>6} {'solved':>6} {'loss':>9} {'playbook':>8} {'sec':>6}")
    for a in result.attempts:
        loss = f"{a.loss:.4f}" if isinstance(a.loss, (int, float)) else "-"
        print(f"{a.number:>7} {a.reward:>7.2f} {a.acc:>6.2f} {'yes' if a.solved else 'no':>6} {loss:>9} "
              f"{a.playbook_size:>8} {a.seconds:>6.1f}")
    found = result.first_success
    print(f"\ndiscovered at attempt {found}" if found else f"\nnot discovered in {len(result.attempts)} attempts")
    if result.final_eval:
        e = result.final_eval
        print(f"adapted model on this task: solved {100 * e['per_task_mean@k']:.0f}% of {e.get('k', '?')} samples "
              f"(test cases passed {100 * e['per_case_mean@k']:.0f}%)")
    solution = first_buffered_solution(result.run_dir, args.task_id) if found else None
    if solution:
        print(f"\nstored solution:\n{solution}")
    print(f"\nrun directory: {result.run_dir}")
    return 0
