"""`resd bench discovery`: discovery probability vs attempts, test-time self-distillation vs best-of-k.

On each task, with the same model, sampling settings and budget K:
  * best-of-k: K independent samples from the base model; P(solved within k) by the unbiased
    pass@k estimator (see `discovery.py`);
  * test-time self-distillation (`resd solve`): K attempts, each followed by feedback, reflection /
    playbook and one update; P(solved within k) = share of (task, trial) sequences whose first
    success came at attempt <= k.
Hard tasks: `--hard-from N` screens the first N tasks of the split with K samples each from the
base model (a seed of its own) and keeps the `--tasks` least-solved ones; best-of-k is then drawn
afresh, so the screening that picked a task as hard does not also count against best-of-k.
Writes discovery.png, discovery.md and discovery.json, and prints the table. The SDPO paper's
claim to compare against: the same discovery probability as best-of-k with ~3x fewer attempts.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from resd.errors import UserError
from resd.experiments.discovery import DiscoveryComparison, best_of_k_curve, discovery_curve


@dataclass
class TaskResult:
    task_id: str
    base_samples: int
    base_successes: int
    first_success: list[int | None]
    """One entry per self-distillation trial: the attempt that first solved the task (None: never)."""


def choose_tasks(env: Any, *, count: int, split: str, task_ids: Sequence[str] | None) -> list[Any]:
    if task_ids:
        return [env.task_by_id(t) for t in task_ids]
    tasks = env.tasks(split)
    if not tasks:
        raise UserError(f"environment {env.name!r} has no {split} tasks")
    if count < 1:
        raise UserError(f"--tasks must be >= 1, got {count}")
    return tasks[:count]


def hardest(tasks: list[Any], counts: Sequence[tuple[int, int]], count: int) -> list[Any]:
    """The `count` tasks with the lowest screened success rate (ties keep the split's order)."""
    if len(tasks) != len(counts):
        raise ValueError(f"{len(tasks)} tasks but {len(counts)} counts")
    order = sorted(range(len(tasks)), key=lambda i: (counts[i][1] / max(1, counts[i][0]), i))
    return [tasks[i] for i in sorted(order[:count])]


def best_of_k_counts(model: Any, tokenizer: Any, env: Any, tasks: list[Any], *, samples: int, cfg: Any,
                     seed: int) -> list[tuple[int, int]]:
    """(n, c) per task: n samples from the unchanged model, c of them solved."""
    from resd.generation.sampling import sample

    rollouts = sample(model, tokenizer, [t.prompt for t in tasks], n=samples, max_new_tokens=cfg.max_completion_length,
                      temperature=cfg.temperature, top_p=cfg.top_p, batch_size=cfg.generation_batch_size, seed=seed,
                      progress="best-of-k samples")
    from resd.rollout import groups_of, score_samples

    samples = score_samples(env, tasks, rollouts, cfg.success_reward_threshold)
    return [(len(g.samples), len(g.successes())) for g in groups_of(samples)]


def run_discovery(*, env_name: str, count: int, attempts: int, trials: int = 1, split: str = "test",
                  task_ids: Sequence[str] | None = None, method: str = "resd", model_spec: str | None = None,
                  config_path: str | None = None, overrides: Sequence[str] = (), out_dir: Path, seed: int = 0,
                  hard_from: int | None = None) -> tuple[DiscoveryComparison, list[TaskResult]]:
    from resd.envs import get
    from resd.experiments.solve import solve, solve_config
    from resd.models import load

    if trials < 1:
        raise UserError(f"--trials must be >= 1, got {trials}")
    base_cfg = solve_config(env=env_name, task_id="", attempts=attempts, method=method, model=model_spec, seed=seed,
                            config_path=config_path, overrides=overrides, output_dir=out_dir / "unused")
    env = get(base_cfg.env, **base_cfg.env_options)
    if hard_from is not None and task_ids:
        raise UserError("give either --task-ids or --hard-from, not both")
    if hard_from is not None and hard_from < count:
        raise UserError(f"--hard-from must be at least --tasks ({count}), got {hard_from}")
    tasks = choose_tasks(env, count=hard_from or count, split=split, task_ids=task_ids)
    model, tokenizer = load(base_cfg.model, dtype=base_cfg.dtype)
    out_dir.mkdir(parents=True, exist_ok=True)
    if hard_from is not None:
        print(f"screening {len(tasks)} tasks with {attempts} base samples each for the {count} hardest", flush=True)
        screened = best_of_k_counts(model, tokenizer, env, tasks, samples=attempts, cfg=base_cfg,
                                    seed=seed + 7_919)  # not the best-of-k seed: fresh samples below
        by_id = {t.id: c for t, c in zip(tasks, screened)}
        tasks = hardest(tasks, screened, count)
        print("hard tasks: " + ", ".join(f"{t.id} ({by_id[t.id][1]}/{by_id[t.id][0]} solved in screening)"
                                         for t in tasks), flush=True)

    print(f"best-of-k: {attempts} samples on each of {len(tasks)} tasks", flush=True)
    counts = best_of_k_counts(model, tokenizer, env, tasks, samples=attempts, cfg=base_cfg, seed=seed)

    results: list[TaskResult] = []
    total, done, started = len(tasks) * trials, 0, time.perf_counter()
    for task, (n, c) in zip(tasks, counts):
        firsts: list[int | None] = []
        for trial in range(trials):
            # eval_k=1: the trainer's closing evaluation is not part of this measurement; keep it cheap.
            cfg = solve_config(env=env_name, task_id=task.id, attempts=attempts, method=method, model=model_spec,
                               seed=seed + trial, config_path=config_path, overrides=overrides,
                               output_dir=out_dir / "runs" / f"{_slug(task.id)}-trial{trial}", eval_k=1)
            # Every trial starts from the base weights: train a copy, keep `model` untouched.
            result = solve(cfg, model=copy.deepcopy(model), tokenizer=tokenizer, env=env, task_id=task.id,
                           keep_weights=False)
            firsts.append(result.first_success)
            done += 1
            elapsed = time.perf_counter() - started
            eta = elapsed / done * (total - done)
            print(f"[{done}/{total}] task {task.id} trial {trial}: "
                  f"{'discovered at attempt ' + str(result.first_success) if result.first_success else 'not discovered'}"
                  f" (best-of-k base: {c}/{n} solved; {elapsed:.0f}s elapsed, ETA {eta:.0f}s)", flush=True)
        results.append(TaskResult(task.id, n, c, firsts))

    comparison = DiscoveryComparison(
        best_of_k=best_of_k_curve([(r.base_samples, r.base_successes) for r in results], attempts),
        self_distillation=discovery_curve([f for r in results for f in r.first_success], attempts),
    )
    return comparison, results


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)[:60]


def discovery_table(comparison: DiscoveryComparison) -> str:
    lines = ["| attempts k | best-of-k | test-time self-distillation |", "|---|---|---|"]
    for k, (a, b) in enumerate(zip(comparison.best_of_k, comparison.self_distillation), start=1):
        lines.append(f"| {k} | {a:.3f} | {b:.3f} |")
    return "\n".join(lines)


def plot_discovery(comparison: DiscoveryComparison, path: Path, title: str) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ks = list(range(1, len(comparison.best_of_k) + 1))
    ax.plot(ks, comparison.best_of_k, "o--", label="best-of-k sampling (pass@k)")
    ax.plot(ks, comparison.self_distillation, "o-", label="test-time self-distillation")
    ax.set_xlabel("attempts k")
    ax.set_ylabel("discovery probability")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    return path


def write_outputs(comparison: DiscoveryComparison, results: list[TaskResult], out_dir: Path, title: str) -> str:
    """discovery.png/.md/.json; returns the markdown text."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_discovery(comparison, out_dir / "discovery.png", title)
    ratio = comparison.attempts_ratio()
    verdict = (f"Best-of-k reaches {comparison.target:.3f} with {len(comparison.best_of_k)} attempts; "
               + (f"self-distillation gets there with {ratio:.2f}x fewer attempts." if ratio
                  else "self-distillation does not reach it within the budget." if comparison.target > 0
                  else "no task was discovered by best-of-k, so there is no attempt ratio."))
    per_task = ["| task | base solved / samples | first success per trial |", "|---|---|---|"]
    per_task += [f"| {r.task_id} | {r.base_successes}/{r.base_samples} | "
                 f"{', '.join('-' if f is None else str(f) for f in r.first_success)} |" for r in results]
    text = "\n".join([f"# {title}", "", discovery_table(comparison), "", verdict, "", "## Per task", "",
                      *per_task, "", "![discovery](discovery.png)", ""])
    (out_dir / "discovery.md").write_text(text, encoding="utf-8")
    (out_dir / "discovery.json").write_text(json.dumps({
        "best_of_k": comparison.best_of_k, "self_distillation": comparison.self_distillation,
        "attempts_ratio": ratio, "tasks": [asdict(r) for r in results]}, indent=2), encoding="utf-8")
    return text


# ----------------------------------------------------------------------------------------------
# `resd bench ...`
# ----------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    p = sub.add_parser("discovery", help="discovery probability vs attempts: test-time self-distillation vs best-of-k",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", required=True, help="environment name")
    p.add_argument("--tasks", type=int, default=4, help="number of tasks, the first N of --split (default 4)")
    p.add_argument("--task-ids", default=None, help="comma-separated task ids instead of the first N (pick hard ones)")
    p.add_argument("--hard-from", type=int, default=None, metavar="N",
                   help="screen the first N tasks with K base samples each and keep the --tasks least-solved")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--attempts", type=int, default=8, help="budget K per task (default 8)")
    p.add_argument("--trials", type=int, default=1, help="self-distillation sequences per task (default 1)")
    p.add_argument("--method", default="resd", choices=["resd", "sdpo", "sdpo_ss"])
    p.add_argument("--model", default=None, help="model spec (default: the config's, smollm2-135m)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", default=None, help="YAML config (sampling, loss, context settings)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default=None, help="output folder (default: runs/bench-discovery-<env>-<time>)")


def run(args: argparse.Namespace) -> int:
    if args.bench != "discovery":  # argparse already restricts the choices; kept for direct callers
        raise UserError(f"unknown benchmark {args.bench!r}; available: discovery")
    out = Path(args.out) if args.out else Path("runs") / f"bench-discovery-{args.env}-{time.strftime('%Y%m%d-%H%M%S')}"
    ids = [t.strip() for t in args.task_ids.split(",") if t.strip()] if args.task_ids else None
    comparison, results = run_discovery(env_name=args.env, count=args.tasks, attempts=args.attempts,
                                        trials=args.trials, split=args.split, task_ids=ids, method=args.method,
                                        model_spec=args.model, config_path=args.config, overrides=args.overrides,
                                        out_dir=out, seed=args.seed, hard_from=args.hard_from)
    title = f"Discovery on {args.env}: {args.method} test-time self-distillation vs best-of-k"
    print()
    print(write_outputs(comparison, results, out, title))
    print(f"written to {out}/discovery.md, discovery.png, discovery.json")
    return 0
