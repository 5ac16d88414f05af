"""`resd compare`: several methods on the same data stream, seeds and evaluation schedule, then a report.

Every arm (a method, or a RESD ablation) gets one config per seed built from the same layers
(method preset < `--config` file < `--set` overrides < what compare pins: env, model, seed, output
dir). The seed decides the training-prompt order and the evaluation schedule is step-based, so
for a given seed all arms see the same prompts in the same batches and are evaluated at the same
steps. Runs go one after another; a run whose directory already holds summary.json is reused, so
re-running the same command after an interruption only does the missing work.

Ablations (`--ablations`, RESD paper Table 3): full RESD and RESD without reflection, without the
playbook, and without the solution buffer.
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resd.errors import UserError

DEFAULT_METHODS = ("resd", "sdpo", "sdpo_ss", "grpo")



@dataclass(frozen=True)
class Arm:
    """One compared variant: a method preset plus config values of its own."""

    name: str
    """Directory-safe name (`resd`, `resd-no_playbook`)."""
    method: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PlannedRun:
    arm: Arm
    seed: int
    output_dir: Path


VARIANTS: dict[str, dict[str, Any]] = {
    "auto": {"teacher_slots": "auto"},
    "pg": {"pg_coef": 1.0},
    # Remedies for a teacher that makes the student worse (resd.distill.losses.LossSettings, issue 21).
    "sharp": {"distillation_teacher_temperature": 0.5},
    "teachertop": {"distillation_teacher_topk": 5},
    "gate": {"distillation_token_gate": True},
    "cap": {"distillation_teacher_entropy_cap": True},
    "fail": {"distill_outcomes": "failures"},
    "fkl": {"distillation_alpha": 0.0},
    "jsd": {"distillation_alpha": 0.5},
    "token": {"distillation_mode": "sampled_token"},
}
"""`--methods resd+auto`: a method with extra settings (auto teacher slots; a GRPO term; a
sharpened (T = 0.5), top-5 or entropy-capped teacher; token gating; failures only; forward KL / JSD(0.5) instead of
the reverse KL; the sampled-token loss)."""


def parse_methods(text: str) -> list[str]:
    """Method names, each optionally with `+variant`s (resd+auto, sdpo+auto+pg)."""
    from resd.train.methods import METHODS

    methods = [m.strip() for m in text.split(",") if m.strip()]
    if not methods:
        raise UserError("--methods is empty; give a comma-separated list such as resd,sdpo,grpo")
    for m in methods:
        base, *variants = m.split("+")
        if base not in METHODS:
            raise UserError(f"unknown method {base!r} in --methods; choose from {', '.join(METHODS)}")
        bad = [v for v in variants if v not in VARIANTS]
        if bad:
            raise UserError(f"unknown variant {bad[0]!r} in {m!r}; variants: {', '.join(VARIANTS)}")
    if len(set(methods)) != len(methods):
        raise UserError(f"--methods lists a method twice: {text!r}")
    return methods


def build_arms(methods: list[str], ablations: bool) -> list[Arm]:
    """The compared variants: the methods (with their +variants), or RESD and its three Table-3
    ablations."""
    if ablations:
        from resd.train.methods import ABLATIONS

        return [Arm("resd", "resd")] + [Arm(f"resd-{key}", "resd", values) for key, (_, values) in ABLATIONS.items()]
    arms = []
    for m in methods:
        base, *variants = m.split("+")
        values: dict[str, Any] = {}
        for v in variants:
            values.update(VARIANTS[v])
        arms.append(Arm(m.replace("+", "-"), base, values))
    return arms


def plan(arms: list[Arm], seeds: list[int], out_dir: Path) -> list[PlannedRun]:
    """Seed-major order, so an interrupted comparison already has every arm on the first seed."""
    return [PlannedRun(arm, seed, out_dir / f"{arm.name}-seed{seed}") for seed in seeds for arm in arms]


def make_config(run: PlannedRun, *, config_path: str | None, overrides: list[str], env: str | None,
                model: str | None) -> Any:
    """The RESDConfig of one planned run (preset < file < overrides < pinned values)."""
    from resd.train.config import load_config

    # Every arm of a seed starts from the same weights and is evaluated alike, so the step-0
    # evaluation is made once per seed and reused (the cache checks that the settings match).
    pinned: dict[str, Any] = {**run.arm.values, "seed": run.seed, "output_dir": str(run.output_dir),
                              "base_eval_cache": str(run.output_dir.parent / "base_eval" / f"seed{run.seed}.json")}
    if env:
        pinned["env"] = env
    if model:
        pinned["model"] = model
    return load_config(config_path, overrides, method=run.arm.method, **pinned)


def check_same_stream(configs: list[Any]) -> None:
    """Refuse a comparison whose runs would not see the same prompts or be evaluated alike.

    Only keys that define the data stream and the evaluation are compared; method presets may
    differ in everything else (group size, teacher, loss).
    """
    keys = ("env", "env_options", "model", "batch_size", "shuffle", "max_batches", "max_steps",
            "inner_updates", "eval_every", "eval_k", "eval_limit", "eval_at_start", "max_completion_length")
    by_seed: dict[int, Any] = {}
    for cfg in configs:
        ref = by_seed.setdefault(cfg.seed, cfg)
        for key in keys:
            if getattr(cfg, key, None) != getattr(ref, key, None):
                raise UserError(f"the {cfg.method} run and the {ref.method} run (seed {cfg.seed}) differ in "
                                f"{key} ({getattr(cfg, key)!r} vs {getattr(ref, key)!r}); a comparison needs the "
                                f"same data stream and evaluation, so set {key} in --config, not per method")


def check_reusable(run_dir: Path, cfg: Any) -> None:
    """A run directory left by an earlier compare may be reused only if it was made by the same
    config; otherwise its results would silently stand in for the requested ones."""
    import yaml

    saved_path = run_dir / "config.yaml"
    if not saved_path.exists():
        return
    saved = yaml.safe_load(saved_path.read_text()) or {}
    wanted = cfg.to_dict()
    defaults = type(cfg)().to_dict()
    for key in sorted(set(saved) | set(wanted)):
        if key in ("output_dir", "progress", "report_to", "base_eval_cache"):
            continue
        if key == "strategy" and wanted.get(key) is None:
            continue  # the run recorded what its launch gave; this comparison lets the launch decide again
        if key not in saved and wanted.get(key) == defaults.get(key):
            continue  # a knob added since that run was made, asked for at its default: what that run did
        if saved.get(key) != wanted.get(key):
            raise UserError(f"{run_dir} was run with {key}={saved.get(key)!r}, this comparison wants "
                            f"{wanted.get(key)!r}; pass a new --out folder (or delete {run_dir})")


# Named so that the CLI's `run_<command>` lookup (cli.py) does not mistake it for the entry point.
def compare_methods(*, methods: list[str], seeds: list[int], out_dir: Path, config_path: str | None = None,
                overrides: list[str] | None = None, env: str | None = None, model: str | None = None,
                ablations: bool = False, title: str | None = None, keep_checkpoints: bool = True) -> Any:
    """Train every planned run that has not finished yet, then build the report. Returns it.

    keep_checkpoints=False deletes each run's RUN/checkpoints once it has finished (its summary.json
    is written): the report reads only the run's logs, and a 135M-parameter run's final and
    selected checkpoints take ~2.6 GB, so a benchmark of dozens of runs would otherwise fill a disk."""
    from resd.report import build_report, load_run, table_markdown
    from resd.train import RESDTrainer
    from resd.run.checkpoint import find_checkpoint

    planned = plan(build_arms(methods, ablations), seeds, out_dir)
    configs = [make_config(r, config_path=config_path, overrides=list(overrides or []), env=env, model=model)
               for r in planned]
    check_same_stream(configs)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for i, (run, cfg) in enumerate(zip(planned, configs), start=1):
        head = f"[{i}/{len(planned)}] {run.arm.name} seed {run.seed}"
        check_reusable(run.output_dir, cfg)
        if (run.output_dir / "summary.json").exists():
            print(f"{head}: finished earlier, reusing {run.output_dir}", flush=True)
            if not keep_checkpoints:
                shutil.rmtree(run.output_dir / "checkpoints", ignore_errors=True)
            continue
        resuming = find_checkpoint(run.output_dir / "checkpoints" / "latest") is not None
        print(f"{head} -> {run.output_dir}{' (resuming)' if resuming else ''} "
              f"({time.perf_counter() - started:.0f}s elapsed)", flush=True)
        run_start = time.perf_counter()
        trainer = RESDTrainer.from_run_dir(run.output_dir) if resuming else RESDTrainer(cfg)
        trainer.train()
        trainer.close()
        if not keep_checkpoints:
            shutil.rmtree(run.output_dir / "checkpoints", ignore_errors=True)
        print(f"{head}: done in {time.perf_counter() - run_start:.0f}s", flush=True)

    runs = [load_run(r.output_dir) for r in planned]
    env_name = runs[0].env
    report = build_report(runs, out_dir / "report",
                          title or (f"RESD ablations on {env_name}" if ablations else f"resd comparison on {env_name}"))
    k = next((int(e["k"]) for r in runs for e in r.evals if "k" in e), 4)
    print()
    print(table_markdown(report.rows, k))
    print(f"\nreport: {report.markdown}\n        {report.html}")
    return report


# ----------------------------------------------------------------------------------------------
# `resd compare`
# ----------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default=None, help="environment name (default: the config's env)")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"comma-separated methods (default: {','.join(DEFAULT_METHODS)})")
    parser.add_argument("--seeds", type=int, default=1, help="number of seeds, 0..N-1 (default 1; the paper "
                        "reports one run per method, use 3 for a spread)")
    parser.add_argument("--seed-offset", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--config", default=None, help="YAML config shared by every run (e.g. configs/demo.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run (repeatable), e.g. --set batch_size=8")
    parser.add_argument("--model", default=None, help="model spec for every run (default: the config's model)")
    parser.add_argument("--ablations", action="store_true",
                        help="run RESD and its Table-3 ablations (w/o reflection / playbook / solution buffer) "
                             "instead of --methods")
    parser.add_argument("--out", default=None,
                        help="output folder (default: runs/compare-<env>-<timestamp>); re-use it to resume")
    parser.add_argument("--title", default=None, help="report title")


def run(args: argparse.Namespace) -> int:
    if args.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {args.seeds}")
    methods = parse_methods(args.methods)
    env_label = args.env or "config-env"
    out = Path(args.out) if args.out else Path("runs") / f"compare-{env_label}-{time.strftime('%Y%m%d-%H%M%S')}"
    seeds = list(range(args.seed_offset, args.seed_offset + args.seeds))
    compare_methods(methods=methods, seeds=seeds, out_dir=out, config_path=args.config, overrides=args.overrides,
                env=args.env, model=args.model, ablations=args.ablations, title=args.title)
    return 0
