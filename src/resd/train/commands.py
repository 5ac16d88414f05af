"""`resd train --config FILE [key=value ...]` and `resd train --resume RUN_DIR`."""

from __future__ import annotations

import argparse

from resd.errors import UserError
from resd.train.methods import METHODS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML config (see configs/: smoke.yaml, demo.yaml, <task>/<method>.yaml)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a run from RUN_DIR/checkpoints/latest")
    parser.add_argument("--method", choices=METHODS,
                        help="training method (its preset sits under the config's values)")
    parser.add_argument("--output-dir", metavar="DIR", help="run directory (default runs/<method>-<env>-seed<S>-<time>)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, dotted for nested keys: learning_rate=1e-5 context.max_entries=50")


def run(args: argparse.Namespace) -> int:
    from resd.train.launch import cpu_ranks_to_start, start_cpu_ranks

    ranks = cpu_ranks_to_start()  # `accelerate launch --cpu --num_processes N` started only this process
    if ranks:
        return start_cpu_ranks(ranks, args.argv)

    from resd.train.config import load_config
    from resd.train.trainer import RESDTrainer

    if args.resume:
        if args.config or args.method or args.overrides or args.output_dir:
            raise UserError("--resume continues a run with its saved config; drop --config/--method/--output-dir/overrides")
        trainer = RESDTrainer.from_run_dir(args.resume)
    else:
        if not args.config and not args.overrides and not args.method:
            raise UserError("give --config FILE (e.g. configs/smoke.yaml) or --resume RUN_DIR")
        extra = {"output_dir": args.output_dir} if args.output_dir else {}
        cfg = load_config(args.config, args.overrides, method=args.method, **extra)
        trainer = RESDTrainer(cfg)
    run_dir = trainer.train()
    from resd.train.trainer import finish_distributed

    finish_distributed()
    if trainer.main:
        print(f"run directory: {run_dir}")
        from resd.report import run_summary_text

        text = run_summary_text(run_dir)
        if text:
            print(text)
        summary = run_dir / "summary.json"
        if summary.exists():
            import json

            s = json.loads(summary.read_text())
            sel = s.get("selected") or {}
            if sel:
                print(f"selected step {s['selected_step']}: " + ", ".join(
                    f"{k}={sel[k]:.3f}" for k in ("per_task_mean@k", "per_task_best@k", "per_case_mean@k", "per_case_best@k")))
    return 0
