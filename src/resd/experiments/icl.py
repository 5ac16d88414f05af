"""`resd icl`: grow a playbook in context, with no weight update, then evaluate with it.

The ACE idea as a baseline for RESD: stream the training tasks in batches; the student answers
each with the current playbook in its prompt; the environment scores the answers; the context
updater reflects, curates and concises exactly as in RESD training. Finally the test split is
evaluated with the final playbook in the prompt (and, with --with-base, without it), which shows
what the playbook alone buys.

Outputs in --out: playbook.json, playbooks/step_NNNNNN.json (so `resd playbook show OUT`
works), context_state.json, metrics.jsonl (one line per batch), context_outputs.jsonl (the raw
reflector/curator answers, to check that the model follows the formats) and eval.json.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

from resd.context.reflect import is_degenerate
from resd.context.slots import TeacherContext
from resd.context.teacher_prompt import teacher_messages
from resd.context.updater import ContextConfig, ContextUpdater, GenerateFn
from resd.errors import UserError
from resd.rollout import score_samples
from resd.files import write_json_atomic
from resd.generation.engines import EngineSettings, HFEngine, generate_fn, make_engine

ICL_TEMPLATE = "icl"


def with_playbook(messages: Sequence[dict[str, str]], playbook: str, template: str = ICL_TEMPLATE) -> list[dict[str, str]]:
    """The student's messages with the playbook appended to the last user turn (unchanged when
    the playbook is empty)."""
    if not playbook.strip():
        return [dict(m) for m in messages]
    return list(teacher_messages(template, messages, TeacherContext(distill=True, playbook=playbook)))


# Not named run_icl: the CLI would take `run_<command>` for the command's entry point.
def grow_playbook(
    env: Any,
    model: Any,
    tokenizer: Any,
    *,
    context: ContextConfig,
    limit_train: int | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 512,
    temperature: float = 1.0,
    top_p: float = 0.95,
    seed: int = 0,
    template: str = ICL_TEMPLATE,
    success_threshold: float = 1.0,
    on_batch: Callable[[dict[str, Any], ContextUpdater], None] | None = None,
    context_generate: GenerateFn | None = None,
    engine: Any = None,
    progress: bool = True,
) -> ContextUpdater:
    """Run the in-context loop over the training tasks; returns the updater (playbook inside).

    One step per batch of `batch_size` tasks, one sample per task (RESD's N=1). `on_batch`
    receives each batch's metrics record and the updater (for logging and snapshots).
    `context_generate` replaces the student as reflector/curator (default: the student itself).
    `engine` (resd.generation.engines) generates answers, reflections and curations (default: the HF engine).
    A sample succeeded when its reward >= `success_threshold`.
    """
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1 (got {batch_size})")
    tasks = env.tasks("train")
    if limit_train is not None:
        tasks = tasks[: max(0, limit_train)]
    if not tasks:
        raise UserError(f"{env.name} has no training tasks to learn from (check --limit-train)")
    engine = engine or HFEngine(model, tokenizer, batch_size=batch_size)
    generate = context_generate or generate_fn(engine, top_p=top_p, stop_when=is_degenerate)
    updater = ContextUpdater(context, generate, seed=seed)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(tasks), desc=f"icl {env.name}", unit="task", dynamic_ncols=True)
    rollouts = 0
    shown = {"success": "-", "playbook": 0}

    def phase(name: str) -> None:  # a CPU batch takes minutes: say what it is doing
        if bar is not None:
            bar.set_postfix(phase=name, **shown)

    try:
        for step, start in enumerate(range(0, len(tasks), batch_size), start=1):
            batch = tasks[start : start + batch_size]
            started = time.perf_counter()
            phase("rollout")
            prompts = [with_playbook(t.prompt, updater.playbook_text(t.id), template) for t in batch]
            answers = engine.sample(prompts, n=1, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                    seed=seed * 100_003 + step)
            rollout_time = time.perf_counter() - started
            phase("score")
            samples = score_samples(env, batch, answers, success_threshold)
            outcomes = [s.outcome for s in samples]
            phase("reflect+curate")
            stats = updater.update(step, samples)
            rollouts += len(batch)
            record = {
                "step": step,
                "rollouts": rollouts,
                "reward_mean": sum(o.reward for o in outcomes) / len(outcomes),
                "success_rate": sum(s.succeeded for s in samples) / len(samples),
                "acc_mean": sum(o.acc for o in outcomes) / len(outcomes),
                "playbook_size": stats["context/playbook_size"],
                "time/rollout": rollout_time,
                **stats,
                "time/step": time.perf_counter() - started,
            }
            if on_batch is not None:
                on_batch(record, updater)
            shown = {"success": f"{record['success_rate']:.2f}", "playbook": int(record["playbook_size"])}
            phase("done")
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    return updater


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", required=True, help="environment name (`resd envs` lists them)")
    parser.add_argument("--model", default=None, help="HF id, local dir, .gguf path or alias (default: smollm2-135m)")
    parser.add_argument("--limit-train", type=int, default=None, metavar="N", help="use the first N training tasks")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="evaluate on the first N test tasks")
    parser.add_argument("--k", type=int, default=4, help="samples per test task (mean@k / best@k; default 4)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="tasks per context update and generation batch (default 8)")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="token cap for student answers (default 512)")
    parser.add_argument("--temperature", type=float, default=1.0, help="student sampling temperature (paper: 1.0)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--scope", choices=("global", "per_example"), default="global", help="playbook scope")
    defaults = ContextConfig()
    parser.add_argument("--max-entries", type=int, default=None,
                        help=f"playbook budget M_max (default {defaults.max_entries})")
    parser.add_argument("--concise-method", choices=("prioritized", "staleness", "reset"), default=None,
                        help=f"how the playbook is pruned (default {defaults.concise_method})")
    parser.add_argument("--reflection-max-new-tokens", type=int, default=None,
                        help=f"token cap for reflections (default {defaults.reflection_max_new_tokens})")
    parser.add_argument("--curation-max-new-tokens", type=int, default=None,
                        help=f"token cap for curator answers (default {defaults.curation_max_new_tokens})")
    parser.add_argument("--with-base", action="store_true",
                        help="also evaluate without the playbook, to show what it buys")
    parser.add_argument("--out", default=None, help="output directory (default: runs/icl-ENV-SEED)")
    parser.add_argument("--backend", choices=("hf", "vllm"), default="hf",
                        help="generation engine (default hf; vllm needs the extra, see the README)")


def _context_config(args: argparse.Namespace) -> ContextConfig:
    cfg = ContextConfig(playbook_scope=args.scope)
    overrides = {"max_entries": args.max_entries, "concise_method": args.concise_method,
                 "reflection_max_new_tokens": args.reflection_max_new_tokens,
                 "curation_max_new_tokens": args.curation_max_new_tokens}
    return replace(cfg, **{k: v for k, v in overrides.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    from resd import models
    from resd.envs import registry
    from resd.eval.evaluate import evaluate

    if args.k < 1:
        raise UserError(f"--k must be >= 1 (got {args.k})")
    env = registry.get(args.env)
    context = _context_config(args)
    model_spec = args.model or models.DEFAULT_MODEL
    out = Path(args.out or f"runs/icl-{args.env}-{args.seed}")
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = models.load(model_spec)

    metrics_path = out / "metrics.jsonl"
    metrics_path.write_text("")

    outputs_path = out / "context_outputs.jsonl"
    outputs_path.write_text("")

    def log(record: dict[str, Any], updater: ContextUpdater) -> None:
        with metrics_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        with outputs_path.open("a", encoding="utf-8") as f:  # the raw reflector/curator answers
            for item in updater.last_outputs:
                f.write(json.dumps({"step": record["step"], **item}) + "\n")
        write_json_atomic(out / "playbooks" / f"step_{record['step']:06d}.json", updater.playbook_snapshot())

    engine = make_engine(EngineSettings(backend=args.backend), model, tokenizer, batch_size=args.batch_size,
                         max_model_len=8192 + args.max_new_tokens, seed=args.seed)
    updater = grow_playbook(env, model, tokenizer, context=context, limit_train=args.limit_train,
                            batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                            temperature=args.temperature, seed=args.seed, on_batch=log, engine=engine)
    updater.save_playbook(out / "playbook.json")
    write_json_atomic(out / "context_state.json", updater.state_dict())

    def transform(messages: list[dict[str, str]], task: Any = None) -> list[dict[str, str]]:
        example_id = getattr(task, "id", "")
        return with_playbook(messages, updater.playbook_text(example_id))

    common = dict(k=args.k, limit=args.limit, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                  temperature=args.temperature, seed=args.seed, engine=engine)
    results: dict[str, Any] = {"env": env.name, "model": model_spec, "seed": args.seed,
                               "train_tasks": len(env.tasks("train")[: args.limit_train]),
                               "playbook_size": updater.playbook_size(),
                               "context": context.to_dict()}
    results["with_playbook"] = evaluate(model, tokenizer, env, prompt_transform=transform, **common)
    if args.with_base:
        results["without_playbook"] = evaluate(model, tokenizer, env, **common)
    engine.close()
    write_json_atomic(out / "eval.json", results)

    print(f"playbook: {updater.playbook_size():.0f} entries -> {out / 'playbook.json'} "
          f"(`resd playbook show {out}`)")
    for label in ("with_playbook", "without_playbook"):
        if label in results:
            r = results[label]
            print(f"{label.replace('_', ' ')}: per-task mean@{r['k']} {r['per_task_mean@k']:.3f}  "
                  f"best@{r['k']} {r['per_task_best@k']:.3f}  per-case mean@{r['k']} {r['per_case_mean@k']:.3f}  "
                  f"best@{r['k']} {r['per_case_best@k']:.3f}  ({r['n_tasks']} tasks)")
    print(f"results -> {out / 'eval.json'}")
    return 0
