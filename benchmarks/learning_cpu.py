"""CPU learning benchmark: on the default model, which methods learn a rare-success task, and how
fast per rollout?

RESD (1 rollout per prompt), SDPO (groups of 8), GRPO (G = 8), and RESD and SDPO with
`teacher_slots: auto` (each run probes its teacher first and keeps only the prompt slots that made
the teacher prefer the accepted answer) on the same training prompts, seeds and evaluation
schedule (`resd compare` underneath), 3 seeds, >= 40 policy updates each, sized for <= 90 min on 2
CPU cores with SmolLM2-135M-Instruct. Prints, per method:
  * per-task accuracy gain over the base model (mean@k at the final evaluation minus the same run's
    step-0 evaluation) with a 95% confidence interval over seeds (Student t);
  * the same at the rank-selected step (optimistic: the rule looks at the test evaluations);
  * rollouts consumed and gain per 1000 rollouts (interaction efficiency, RESD paper §4.4).
Nothing is tuned to make a method win; whatever comes out is reported.

The task (written to OUT/learning_cpu.yaml): `constraints` restricted to one rule, "start your
response with the word W" (base per-task success ~19% on SmolLM2: rare, and a skill that carries
over to held-out prompts); 16-token answers; 20 batches of 1 prompt, K = 2 (40 updates: RESD
samples 1 answer per update, SDPO and GRPO 8); held-out evaluation on 16 test prompts x k = 4
before training, after 20 updates and at the end; lr 2e-5, no warm-up (the paper's 1e-6 would not
move a 135M model within 40 updates). A first sizing with 2 prompts per batch took 14 / 28 / 7 s
per RESD / SDPO / GRPO update on the shared 2 cores (SDPO distils all 16 samples of a batch),
which put the 15 runs near three hours, so it was halved.

    python benchmarks/learning_cpu.py                 # the real run (~60-90 min on 2 cores)
    python benchmarks/learning_cpu.py --quick         # minutes: tiny-random model, 1 seed, 2 updates

The remedies table (issue 21: self-distillation settings that should not make the student worse)
runs every remedy of resd.distill.losses (as `resd compare` method variants) beside SDPO, RESD,
their `auto` variants and GRPO, on the start-word task and on a second rare-success task, 3 seeds:

    python benchmarks/learning_cpu.py --remedies                           # several CPU-hours
    python benchmarks/learning_cpu.py --remedies --seeds 1 --tasks start-word --methods sdpo,sdpo+sharp

Each task's runs go to OUT/<task>/ (re-running the same command resumes), the table is printed
per task and written to OUT/remedies.json. Then, for every self-distillation run (not GRPO, not
`auto`), both probes on the run's own config and seed before any update (RUN/predictors.json): the
teacher probe's ranking margin (`resd probe`) and the update probe's update margin and held-out
entropy change (`resd probe --update`), beside the run's end gain; and the health warnings about the
teacher replayed over its metrics. It prints how many runs' gain sign each one got right.
`--no-predictors` trains and tabulates only (the probes cost a few minutes a run); a later call
without it reuses the finished runs and adds them.

Finished runs' checkpoints are deleted (the tables read only the logs; at 135M a run's final and
selected weights with optimiser state take ~2.6 GB); `--keep-checkpoints` keeps them.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from resd.eval.metrics import mean_ci

CPU_CONFIG = {
    "env": "constraints",
    "env_options": {"rules": ["starts_with"], "max_constraints": 1, "train_size": 256, "test_size": 32},
    "model": "smollm2-135m",
    "batch_size": 1,
    "max_batches": 20,
    "inner_updates": 2,
    "max_completion_length": 16,
    "generation_batch_size": 32,
    "micro_batch_size": 16,
    "learning_rate": 2.0e-5,
    "warmup_steps": 0,
    "eval_every": 20,
    "eval_limit": 16,
    "eval_k": 4,
    "checkpoint_every": 1000,
    "probe_tasks": 8,
    "probe_samples": 8,
    "context": {"reflection_max_new_tokens": 48, "curation_max_new_tokens": 48},
}
QUICK_CONFIG = {**CPU_CONFIG, "model": "tiny-random", "max_batches": 1, "eval_limit": 4, "max_completion_length": 8,
                "probe_tasks": 2, "probe_samples": 2,
                "context": {"reflection_max_new_tokens": 8, "curation_max_new_tokens": 8}}
METHODS = "resd,sdpo,grpo,resd+auto,sdpo+auto"
REMEDY_METHODS = ("sdpo,sdpo+sharp,sdpo+cap,sdpo+teachertop,sdpo+gate,sdpo+fail,sdpo+fkl,sdpo+jsd,sdpo+token,sdpo+pg,"
                  "sdpo+auto,sdpo+sharp+auto,resd,resd+sharp,resd+auto,grpo")
"""The remedies table: SDPO with each remedy (compare.VARIANTS: sharpened T = 0.5 / entropy-capped / top-5
teacher, token gating, failures only, forward KL, JSD, sampled token, + GRPO term), RESD, the auto
variants, GRPO."""
TASKS: dict[str, dict] = {
    "start-word": {"rules": ["starts_with"], "max_constraints": 1, "train_size": 256, "test_size": 32},
    # 1-3 of {start word, keyword, a digit}: base success 12.5% (8 of 64 samples, 16 train prompts x 4,
    # 16 tokens, measured nice'd before choosing it). Issue 21 asks < 15%; single rules were either too
    # common (keyword 37%, number 47%) or never met in 16 tokens (uppercase 0/64, ends_with,
    # keyword_twice 0/32), which leaves no success to learn from.
    "start-keyword-digit": {"rules": ["starts_with", "keyword", "number"], "max_constraints": 3,
                            "train_size": 256, "test_size": 32},
}
"""Remedies-table tasks: name -> constraints env_options (each a rare success for SmolLM2-135M)."""

def gains(runs: list) -> dict[str, list[float]]:
    """Per seed: final and selected per-task mean@k minus the run's own step-0 mean@k."""
    from resd.report import eval_at, select_step

    out: dict[str, list[float]] = {"final": [], "selected": [], "rollouts": [], "base": []}
    for run in runs:
        base = eval_at(run, 0)["per_task_mean@k"]
        out["base"].append(base)
        out["final"].append(run.evals[-1]["per_task_mean@k"] - base)
        out["selected"].append(eval_at(run, select_step(run.evals))["per_task_mean@k"] - base)
        out["rollouts"].append(float(run.evals[-1].get("rollouts", 0)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny-random model, 1 seed, 2 updates (smoke run)")
    parser.add_argument("--model", default=None, help="model spec (default smollm2-135m; tiny-random with --quick)")
    parser.add_argument("--env", default=None, help="environment (default constraints)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds (default 3; 1 with --quick)")
    parser.add_argument("--methods", default=METHODS, help=f"methods, with +auto / +pg variants (default {METHODS})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default=None, help="output folder (default runs/learning-cpu-<time>); reuse to resume")
    parser.add_argument("--remedies", action="store_true",
                        help="the remedies table: every remedy on each of --tasks (default methods: REMEDY_METHODS)")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"with --remedies: tasks among {', '.join(TASKS)}")
    parser.add_argument("--no-predictors", action="store_true",
                        help="with --remedies: train and tabulate only; a later call without it adds the "
                             "step-0 predictors (each is kept in RUN/predictors.json)")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep each finished run's RUN/checkpoints (~2.6 GB a run at 135M); by default "
                             "they are deleted, as the tables read only the runs' logs")
    args = parser.parse_args(argv)
    if args.remedies:
        return remedies(args)

    from resd.experiments.compare import compare_methods, parse_methods

    config = dict(QUICK_CONFIG if args.quick else CPU_CONFIG)
    if args.quick:
        config["max_steps"] = 2
    if args.model:
        config["model"] = args.model
    if args.env:
        config["env"] = args.env
    seeds = list(range(args.seeds if args.seeds is not None else (1 if args.quick else 3)))
    out = Path(args.out) if args.out else Path("runs") / f"learning-cpu-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "learning_cpu.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    started = time.perf_counter()
    compare_methods(methods=parse_methods(args.methods), seeds=seeds, out_dir=out, config_path=str(config_path),
                    overrides=args.overrides, title=f"CPU learning benchmark on {config['env']} ({config['model']})",
                    keep_checkpoints=args.keep_checkpoints)
    wall = time.perf_counter() - started

    print(f"\n== CPU learning benchmark: {config['env']}, {config['model']}, {len(seeds)} seed(s), "
          f"{wall / 60:.1f} min ==")
    print_table(out, parse_methods(args.methods), seeds)
    print(f"\nreport: {out / 'report' / 'report.md'}")
    return 0


def table_rows(out: Path, methods: list[str], seeds: list[int]) -> list[dict]:
    """Per method: base, final and selected gains and gain per 1k rollouts (mean, 95% CI over seeds)."""
    from resd.report import load_run

    rows = []
    for method in methods:
        runs = [load_run(out / f"{method.replace('+', '-')}-seed{s}") for s in seeds]
        g = gains(runs)
        per_k = [f / r * 1000 if r else float("nan") for f, r in zip(g["final"], g["rollouts"])]
        rows.append({"method": method, "seeds": len(seeds), "base": statistics.fmean(g["base"]),
                     "gain_final": mean_ci(g["final"]), "gain_selected": mean_ci(g["selected"]),
                     "rollouts": statistics.fmean(g["rollouts"]), "gain_final_per_1k_rollouts": mean_ci(per_k),
                     "per_seed_gain_final": g["final"]})
    return rows


def print_table(out: Path, methods: list[str], seeds: list[int]) -> list[dict]:
    print("per-task mean@k, percentage points; ± = 95% CI half-width over seeds (t distribution)")
    width = max(10, *(len(m) for m in methods))
    header = (f"{'method':<{width}} {'base':>8} {'gain final':>16} {'gain selected':>16} {'rollouts':>9} "
              f"{'final gain /1k rollouts':>24}")
    print(header)
    print("-" * len(header))
    rows = table_rows(out, methods, seeds)
    for row in rows:
        print(f"{row['method']:<{width}} {100 * row['base']:>8.2f} {fmt_ci(row['gain_final']):>16} "
              f"{fmt_ci(row['gain_selected']):>16} {row['rollouts']:>9.0f} "
              f"{fmt_ci(row['gain_final_per_1k_rollouts']):>24}")
    return rows


def fmt_ci(mean_half: tuple[float, float], scale: float = 100.0) -> str:
    m, h = mean_half
    return f"{scale * m:+.2f} ± {scale * h:.2f}" if not math.isnan(h) else f"{scale * m:+.2f}"


def remedies(args: argparse.Namespace) -> int:
    """The remedies table: each task of --tasks in its own folder, same seeds and methods."""
    import json

    from resd.experiments.compare import compare_methods, parse_methods

    methods = parse_methods(args.methods if args.methods != METHODS else REMEDY_METHODS)
    names = [t for t in args.tasks.split(",") if t]
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        raise SystemExit(f"unknown task {unknown[0]!r}; choose among {', '.join(TASKS)}")
    seeds = list(range(args.seeds if args.seeds is not None else (1 if args.quick else 3)))
    out = Path(args.out) if args.out else Path("runs") / f"learning-remedies-{time.strftime('%Y%m%d-%H%M%S')}"
    summary: dict = {"methods": methods, "seeds": seeds, "tasks": {}}
    started = time.perf_counter()
    for name in names:
        config = dict(QUICK_CONFIG if args.quick else CPU_CONFIG)
        config["env_options"] = TASKS[name]
        if args.quick:
            config["max_steps"] = 2
        if args.model:
            config["model"] = args.model
        task_out = out / name
        task_out.mkdir(parents=True, exist_ok=True)
        config_path = task_out / "learning_cpu.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        compare_methods(methods=methods, seeds=seeds, out_dir=task_out, config_path=str(config_path),
                        overrides=args.overrides, title=f"remedies on {name} ({config['model']})",
                        keep_checkpoints=args.keep_checkpoints)
        print(f"\n== remedies: {name}, {config['model']}, {len(seeds)} seed(s), "
              f"{(time.perf_counter() - started) / 60:.1f} min so far ==")
        rows = print_table(task_out, methods, seeds)
        summary["tasks"][name] = {"env_options": TASKS[name], "rows": rows, "predictors":
                                  {} if args.no_predictors else predictor_table(task_out, methods, seeds)}
        (out / "remedies.json").write_text(json.dumps(summary, indent=1))
    print(f"\ntable: {out / 'remedies.json'}")
    return 0


PREDICTORS = ("margin", "update_margin", "entropy")
"""Which step-0 measurement predicts the sign of a run's held-out gain: the teacher probe's ranking
margin (all the template's slots together), the update probe's margin (Δ good - Δ failed after one
update with the run's own loss) and the update probe's held-out entropy change (predicts a gain
when the update makes the student sharper, i.e. < 0)."""


def run_predictors(run_dir: Path, model: Any, tokenizer: Any) -> dict[str, Any]:
    """Both probes on the run's own config and seed, before any update (RUN/predictors.json)."""
    import json

    from resd.envs import get
    from resd.experiments.probe import probe_settings, probe_teacher
    from resd.experiments.update_probe import UpdateProbeSettings, probe_update
    from resd.train.build import build_accelerator
    from resd.train.config import config_from_dict

    saved = run_dir / "predictors.json"
    if saved.exists():
        return json.loads(saved.read_text())
    cfg = config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    env = get(cfg.env, **cfg.env_options)
    ranking = probe_teacher(model, tokenizer, env, probe_settings(cfg, tasks=cfg.probe_tasks, samples=cfg.probe_samples),
                            context=cfg.context, model_name=cfg.model, progress=False)
    last = f"cumulative:{ranking.template_slots[-1]}"
    updated = probe_update(cfg, model, tokenizer, env, UpdateProbeSettings(
        tasks=max(1, cfg.probe_tasks // 4), heldout=cfg.probe_tasks, samples=cfg.probe_samples, seed=cfg.seed),
        build_accelerator(cfg, None), progress=False)
    together = updated.effect("all").stats()
    out = {"margin": ranking.stats(last)["margin_per_token"], "update_margin": together["update_margin"],
           "entropy": together["entropy"], "good": together["good_per_token"], "failed": together["failed_per_token"]}
    saved.write_text(json.dumps(out, indent=1))
    return out


def predictor_table(out: Path, methods: list[str], seeds: list[int]) -> dict[str, Any]:
    """Per self-distillation run: each predictor's value at step 0 beside the run's end gain; per
    predictor, on how many runs it told right whether the run would gain (more than one evaluation
    sample above its base; a predictor says so only when its 95% CI lies on the gaining side)."""
    from resd.models import load
    from resd.report import load_run

    # GRPO has no teacher; an `auto` run distils from slots the probe chose, not the template's.
    runs = [(m, s, out / f"{m.replace('+', '-')}-seed{s}") for m in methods for s in seeds
            if not m.startswith("grpo") and "+auto" not in m]
    if not runs:
        return {}
    model, tokenizer = load(yaml.safe_load((runs[0][2] / "config.yaml").read_text())["model"])
    rows, hits, warned_right = [], {p: 0 for p in PREDICTORS}, {w: 0 for w in WARNINGS}
    print(f"\nwhich step-0 measurement predicts the sign of the end gain ({len(runs)} runs)")
    print(f"{'run':<24} {'end gain':>9} {'margin':>16} {'update margin':>18} {'Δ entropy':>16}  health warnings")
    for method, seed, run_dir in runs:
        started = time.perf_counter()
        values = run_predictors(run_dir, model, tokenizer)
        run = load_run(run_dir)
        gain = gains([run])["final"][0]
        step = 1.0 / (run.evals[-1].get("n_tasks", 16) * run.evals[-1].get("k", 4))
        gained = gain > step  # more than one evaluation sample: what `auto` must tell apart
        said = {p: _sign(values[p], flip=p == "entropy") for p in PREDICTORS}
        for p in PREDICTORS:  # a predictor says "it will gain" only when its CI is on the gaining side
            hits[p] += (said[p] == 1) == gained
        warned = health_replay(run.metrics)
        for name in WARNINGS:  # a warning says the run will end no better than it began
            warned_right[name] += (name in warned) == (not gained)
        rows.append({"method": method, "seed": seed, "gain_final": gain, "gained": gained, **values,
                     "predicted": said, "warned": warned})
        print(f"{method + f' s{seed}':<24} {100 * gain:>+9.2f} {_show(values['margin']):>16} "
              f"{_show(values['update_margin']):>18} {_show(values['entropy']):>16}  "
              f"{', '.join(warned) or '-':<34} ({time.perf_counter() - started:.0f} s)", flush=True)
    print("gain or not told right: " + ", ".join(f"{p} {hits[p]}/{len(runs)}" for p in PREDICTORS))
    print("warned exactly on the runs that did not gain: "
          + ", ".join(f"{w} {warned_right[w]}/{len(runs)}" for w in WARNINGS))
    return {"runs": rows, "sign_right": hits, "warning_right": warned_right, "n": len(runs)}


WARNINGS = ("teacher_disagrees", "entropy_rising")
"""The health warnings about the teacher (resd.train.health), replayed over each run's metrics."""


def health_replay(metrics: list[dict[str, Any]]) -> list[str]:
    """The health conditions that warned at least once over these update records (the monitor is a
    pure function of metrics.jsonl, so runs made before a condition existed are judged alike)."""
    from resd.train.health import HealthMonitor

    monitor, fired = HealthMonitor(), []
    for record in metrics:
        monitor.observe(record)
        fired += [w for w in monitor.warned if w in WARNINGS and w not in fired]
    return fired


def _sign(stat: dict[str, Any], flip: bool = False) -> int:
    """+1 / -1 when the 95% CI excludes 0 (flipped for the entropy: sharper predicts a gain), else 0."""
    if not stat["n"] or stat["ci95"] != stat["ci95"] or abs(stat["mean"]) <= stat["ci95"]:
        return 0
    sign = 1 if stat["mean"] > 0 else -1
    return -sign if flip else sign


def _show(stat: dict[str, Any]) -> str:
    return fmt_ci((stat["mean"], stat["ci95"]), scale=1.0) if stat["n"] else "n/a"


if __name__ == "__main__":
    sys.exit(main())
