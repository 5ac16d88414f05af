"""Context-update overhead: the share of a RESD step spent on reflection and curation.

Runs a short RESD training (or reads an existing run with `--run RUN_DIR`) and takes the trainer's
own phase timings from metrics.jsonl: context share = (time/reflection + time/curation) / time/step,
summed over the updates. Every phase's share is printed too.

Target: context share <= 0.5. Reference point: the RESD paper's Figure 8 (App. F) shows RESD's
step at well under twice SDPO's (~600-700 s vs ~400 s on BouncingSim-Easy), i.e. the reflection
and curation overhead is below half of the step.

    python benchmarks/context_overhead.py                       # SmolLM2-135M, 2 updates, CPU
    python benchmarks/context_overhead.py --model tiny-random   # seconds, smoke check
    python benchmarks/context_overhead.py --run runs/resd-...   # an existing run, no training
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Result, add_common_arguments, device_name, print_results  # noqa: E402

PHASES = ("rollout", "scoring", "reflection", "curation", "teacher_forward", "student_step")


def shares(metrics: list[dict]) -> tuple[dict[str, float], float]:
    """Per-phase seconds summed over updates, and the summed step time."""
    totals = {p: sum(float(m.get(f"time/{p}") or 0.0) for m in metrics) for p in PHASES}
    return totals, sum(float(m.get("time/step") or 0.0) for m in metrics)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--run", default=None, help="read this run directory instead of training")
    parser.add_argument("--batch", type=int, default=8, help="prompts per batch")
    parser.add_argument("--steps", type=int, default=2, help="policy updates to run")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = parser.parse_args(argv)

    from resd.files import read_jsonl

    if args.run:
        metrics, source = read_jsonl(Path(args.run) / "metrics.jsonl"), args.run
    else:
        from resd.train.config import load_config
        from resd.train.trainer import RESDTrainer

        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config(None, list(args.set), method="resd", env=args.env, model=args.model, output_dir=tmp,
                              seed=args.seed, batch_size=args.batch, max_steps=args.steps,
                              max_completion_length=args.max_new_tokens, eval_at_start=False, eval_every=None,
                              eval_limit=1, eval_k=1)
            trainer = RESDTrainer(cfg)
            run_dir = trainer.train()
            trainer.close()
            metrics, source = read_jsonl(Path(run_dir) / "metrics.jsonl"), f"fresh run ({args.steps} updates)"
    if not metrics:
        raise SystemExit(f"no policy updates logged in {source}")
    totals, step = shares(metrics)
    context = totals["reflection"] + totals["curation"]
    results = [Result("context update / step time", context, step, "s", 0.5, higher_is_better=False,
                      note="reflection + curation, summed over updates")]
    results += [Result(f"  {p} / step time", totals[p], step, "s", None) for p in PHASES]
    print_results("context-update overhead of RESD", results, {
        "source": source, "model": args.model if not args.run else "(from run)", "device": device_name(),
        "updates": len(metrics), "mean playbook size": sum(m.get("playbook_size", 0) for m in metrics) / len(metrics)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
