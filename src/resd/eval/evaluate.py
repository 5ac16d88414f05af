"""Evaluate a model on an environment's test split: k samples per task, scored by the environment,
reported as per-task and per-test-case accuracy, mean@k and best@k (paper §4.1).

Library: `evaluate(model, tokenizer, env, ...) -> dict` (the four metrics, `k`, `n_tasks`), or
`run_evaluation(...)` for the samples and outcomes as well. Command: `resd eval`.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

from resd.envs.base import Environment, Message, Outcome, Task
from resd.errors import UserError
from resd.eval.metrics import METRIC_KEYS, aggregate, task_score
from resd.eval.scoring import score_rollouts

PromptTransform = Callable[[list[Message], Task], list[Message]]
"""Rewrites a task's chat messages before sampling (e.g. adds a playbook): (messages, task) -> messages."""


@dataclass
class EvalResult:
    """Everything one evaluation produced; `metrics` is what `evaluate` returns."""

    metrics: dict[str, Any]
    tasks: list[Task]
    texts: list[list[str]]  # texts[i][j]: sample j of task i
    outcomes: list[list[Outcome]]
    truncated: list[list[bool]] = field(default_factory=list)
    seconds: float = 0.0

    def per_task_rows(self) -> list[dict[str, Any]]:
        """One summary row per task: how many samples solved it and its per-case accuracy."""
        rows = []
        for task, outcomes in zip(self.tasks, self.outcomes):
            scores = [task_score(o) for o in outcomes]
            accs = [o.acc for o in outcomes]
            rows.append({
                "task_id": task.id,
                "solved": int(sum(scores)),
                "samples": len(outcomes),
                "acc_mean": sum(accs) / len(accs),
                "acc_best": max(accs),
            })
        return rows

    def sample_records(self) -> list[dict[str, Any]]:
        """One JSON-ready record per sample (what `samples.jsonl` holds)."""
        records = []
        for i, task in enumerate(self.tasks):
            for j, (text, outcome) in enumerate(zip(self.texts[i], self.outcomes[i])):
                records.append({
                    "task_id": task.id,
                    "sample": j,
                    "completion": text,
                    "reward": outcome.reward,
                    "acc": outcome.acc,
                    "solved": bool(task_score(outcome)),
                    "truncated": bool(self.truncated[i][j]) if self.truncated else None,
                    "feedback": outcome.feedback,
                })
        return records


def build_messages(task: Task, system_prompt: str | None = None,
                   prompt_transform: PromptTransform | None = None) -> list[Message]:
    """The messages a task is evaluated with.

    `system_prompt` replaces the task's own system message (or is put first when it has none);
    `prompt_transform(messages, task)` then gets the final say.
    """
    messages = [dict(m) for m in task.prompt]
    if system_prompt is not None:
        messages = [{"role": "system", "content": system_prompt}] + [m for m in messages if m.get("role") != "system"]
    if prompt_transform is not None:
        messages = prompt_transform(messages, task)
    return messages


def run_evaluation(
    model: Any,
    tokenizer: Any,
    env: Environment,
    *,
    k: int = 4,
    limit: int | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 512,
    temperature: float = 1.0,
    top_p: float = 0.95,
    seed: int | None = 0,
    system_prompt: str | None = None,
    prompt_transform: PromptTransform | None = None,
    split: str = "test",
    progress: str | None = "eval",
    engine: Any = None,
) -> EvalResult:
    """Sample k responses for each of the first `limit` tasks of `split` and score them (with
    `engine`, a `resd.generation.engines` generation engine, when given; else resd's HF sampler)."""
    from resd.generation.engines import HFEngine

    if k < 1:
        raise UserError(f"k must be >= 1 (got {k}): the number of samples per test task")
    if limit is not None and limit < 1:
        raise UserError(f"limit must be >= 1 (got {limit}), or left out to evaluate every test task")
    tasks = list(env.tasks(split))  # type: ignore[arg-type]
    if not tasks:
        raise UserError(f"environment {env.name!r} has no {split} tasks to evaluate")
    tasks = tasks[:limit] if limit is not None else tasks

    started = time.perf_counter()
    prompts = [build_messages(t, system_prompt, prompt_transform) for t in tasks]
    engine = engine or HFEngine(model, tokenizer, batch_size=batch_size)
    rollouts = engine.sample(prompts, n=k, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                             seed=seed, progress=progress)
    texts = [[r.text for r in row] for row in rollouts]
    outcomes = score_rollouts(env, tasks, rollouts)
    return EvalResult(
        metrics=aggregate(outcomes),
        tasks=tasks,
        texts=texts,
        outcomes=outcomes,
        truncated=[[r.truncated for r in row] for row in rollouts],
        seconds=time.perf_counter() - started,
    )


def evaluate(model: Any, tokenizer: Any, env: Environment, **options: Any) -> dict[str, Any]:
    """The paper's four test metrics as fractions: `per_task_mean@k`, `per_task_best@k`,
    `per_case_mean@k`, `per_case_best@k`, plus `k` and `n_tasks` (`options` as `run_evaluation`'s)."""
    return run_evaluation(model, tokenizer, env, **options).metrics


# ---------------------------------------------------------------------------------------------
# `resd eval`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from resd.models import DEFAULT_MODEL

    parser.add_argument("--env", required=True, help="environment name (`resd envs` lists them) or module:Class")
    parser.add_argument("--env-opt", action="append", default=[], metavar="KEY=VALUE",
                        help="environment option, repeatable; VALUE is read as YAML (3, true, 'text')")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"alias, local directory, .gguf file or Hugging Face id (default: {DEFAULT_MODEL})")
    parser.add_argument("--k", type=int, default=4, help="samples per test task (default: 4)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N test tasks")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences generated together (default: 8)")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="tokens per response (default: 512)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature; 0 = greedy (default: 1.0)")
    parser.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass (default: 0.95)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    parser.add_argument("--system-prompt", default=None, help="system message to put before every task")
    parser.add_argument("--dtype", default=None, help="model dtype: float32, bfloat16, float16, auto")
    parser.add_argument("--out", default=None, help="output directory (default: runs/eval-<env>-<timestamp>)")
    parser.add_argument("--backend", choices=("hf", "vllm"), default="hf",
                        help="generation engine (default hf; vllm needs the extra, see the README)")


def parse_env_options(pairs: Sequence[str]) -> dict[str, Any]:
    """`["a=1", "b=x"]` -> `{"a": 1, "b": "x"}`; values are YAML scalars."""
    from resd.keyvalue import parse_key_value

    return dict(parse_key_value(pair, what=f"--env-opt {pair!r}", example="--env-opt source=generated", empty="")
                for pair in pairs)


def _check_args(args: argparse.Namespace) -> None:
    if args.k < 1:
        raise UserError(f"--k must be >= 1 (got {args.k})")
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be >= 1 (got {args.limit})")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1 (got {args.batch_size})")
    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be >= 1 (got {args.max_new_tokens})")
    if args.temperature < 0:
        raise UserError(f"--temperature must be >= 0 (got {args.temperature}); 0 means greedy")
    if not 0 < args.top_p <= 1:
        raise UserError(f"--top-p must be in (0, 1] (got {args.top_p})")


def default_out_dir(env_name: str, now: datetime | None = None) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", env_name)
    return Path("runs") / f"eval-{safe}-{(now or datetime.now()).strftime('%Y%m%d-%H%M%S')}"


def run(args: argparse.Namespace) -> int:
    from resd import envs, models

    _check_args(args)
    options = parse_env_options(args.env_opt)
    env = envs.get(args.env, **options)  # unknown names -> UserError listing what exists
    n_tasks = len(env.tasks("test"))
    if n_tasks == 0:
        raise UserError(f"environment {args.env!r} has no test tasks to evaluate")
    out = Path(args.out) if args.out else default_out_dir(args.env)
    model, tokenizer = models.load(args.model, dtype=args.dtype)
    from resd.generation.engines import EngineSettings, make_engine

    engine = make_engine(EngineSettings(backend=args.backend), model, tokenizer, batch_size=args.batch_size,
                         max_model_len=8192 + args.max_new_tokens, seed=args.seed)
    result = run_evaluation(
        model, tokenizer, env, k=args.k, limit=args.limit, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed,
        system_prompt=args.system_prompt, progress=f"eval {args.env}", engine=engine,
    )
    engine.close()
    config = {
        "env": args.env, "env_options": options, "model": args.model, "k": args.k, "limit": args.limit,
        "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
        "top_p": args.top_p, "seed": args.seed, "system_prompt": args.system_prompt, "dtype": args.dtype,
        "backend": args.backend,
    }
    write_outputs(out, result, config)
    print_table(result, title=f"{args.env} — {args.model}, {result.metrics['n_tasks']} test tasks × k={args.k}")
    print(f"results: {out / 'results.json'}  samples: {out / 'samples.jsonl'}  ({result.seconds:.0f} s)")
    return 0


def write_outputs(out: Path, result: EvalResult, config: dict[str, Any]) -> None:
    """`results.json` (metrics, config, per-task rows) and `samples.jsonl` (one line per sample)."""
    from resd import __version__

    out.mkdir(parents=True, exist_ok=True)
    truncated = [t for row in result.truncated for t in row]
    payload = {
        "metrics": result.metrics,
        "config": config,
        "seconds": round(result.seconds, 3),
        "truncated_fraction": (sum(truncated) / len(truncated)) if truncated else 0.0,
        "resd_version": __version__,
        "per_task": result.per_task_rows(),
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    with (out / "samples.jsonl").open("w", encoding="utf-8") as f:
        for record in result.sample_records():
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def print_table(result: EvalResult, title: str) -> None:
    """Accuracy table in percent, as the paper reports it (rows: per-task, per-test-case)."""
    from rich.console import Console
    from rich.table import Table

    m = result.metrics
    k = m["k"]
    table = Table(title=title)
    table.add_column("accuracy")
    table.add_column(f"mean@{k}", justify="right")
    table.add_column(f"best@{k}", justify="right")
    table.add_row("per task", f"{100 * m[METRIC_KEYS[0]]:.2f}", f"{100 * m[METRIC_KEYS[1]]:.2f}")
    table.add_row("per test case", f"{100 * m[METRIC_KEYS[2]]:.2f}", f"{100 * m[METRIC_KEYS[3]]:.2f}")
    Console().print(table)
