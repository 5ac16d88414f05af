"""`resd train --config FILE [key=value ...]` and `resd train --resume RUN_DIR`."""

from __future__ import annotations

import argparse

from resd.errors import UserError
from resd.train.methods import METHODS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML config (see configs/: smoke.yaml, demo.yaml, <task>/<method>.yaml)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a run from RUN_DIR/checkpoints/latest")
    parser.add_argument("--sandbox", choices=("bwrap", "unsafe-local"),
                        help="with --resume: the sandbox for model-written code (a run directory never chooses it)")
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
        trainer = RESDTrainer.from_run_dir(args.resume, sandbox=args.sandbox)
    else:
        if args.sandbox:
            raise UserError("--sandbox is for --resume; a new run takes env_options.sandbox=MODE")
        if not args.config and not args.overrides and not args.method:
            raise UserError("give --config FILE (e.g. configs/smoke.yaml) or --resume RUN_DIR")
        extra = {"output_dir": args.output_dir} if args.output_dir else {}
        cfg = load_config(args.config, args.overrides, method=args.method, **extra)
        trainer = RESDTrainer(cfg)
    run_dir = trainer.train()
    from resd.train.trainer import finish_distributed

    finish_distributed(trainer.close)
    if trainer.main:
        print(f"run directory: {run_dir}")
        from resd.report import run_summary_text

        text = run_summary_text(run_dir)
        if text:
            print(text)
        line = result_line(run_dir)
        if line:
            print(line)
    return 0


def result_line(run_dir) -> str:
    """One plain sentence on what training did to the held-out score, and what was kept."""
    import json

    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        return ""
    s = json.loads(summary_path.read_text())
    final, chosen = s.get("final"), s.get("selected")
    from resd.files import read_jsonl

    evals = read_jsonl(run_dir / "eval.jsonl", missing_ok=True)
    first = evals[0] if evals else None
    if not (first and final and chosen):
        return ""
    k, metric = int(final.get("k", 4)), "per_task_mean@k"
    text = (f"result: held-out per-task mean@{k} {first[metric]:.3f} at step {first['step']}"
            f"{' (the initial model)' if first['step'] == 0 else ''} -> {final[metric]:.3f} at step {final['step']}; ")
    if s["selected_step"] == 0:
        text += ("no evaluated step beat the initial model on the paper's rank rule (§4.1), so step 0 is kept"
                 + (" (see the health warnings above)" if s.get("health_warnings") else "")
                 + "; `resd probe` tells whether this model's teacher knows more than its student")
    else:
        text += (f"the paper's rank rule (§4.1) selects step {s['selected_step']} "
                 f"({chosen[metric]:.3f}), saved in {run_dir / 'checkpoints' / 'selected'}")
    return text
