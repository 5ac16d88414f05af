"""Per-phase step latency of RESD (N=1), SDPO (N=1) and GRPO (G=8) on the same prompts (paper App. F).

    python benchmarks/step_latency.py                       # SmolLM2-135M on BouncingSim-Easy (~30 min on 2 cores)
    python benchmarks/step_latency.py --env constraints --max-new-tokens 128   # short answers (~9 min)
    python benchmarks/step_latency.py --model tiny-random --env constraints   # plumbing check in seconds
    python benchmarks/step_latency.py --backend vllm        # rollouts, reflections on vLLM; weight-sync phase
    python benchmarks/step_latency.py --backend both        # HF and vLLM side by side (per method), interleaved

The default workload is the paper's own latency measurement (App. F, Figure 8: BouncingSim-Easy):
a program-writing task whose answers fill the 512-token budget, against 48-token reflections and
curations. Where answers are short (constraints: ~50 tokens) the two 48-token context generations
that RESD runs after the rollout weigh as much as the rollout itself and RESD/SDPO is ~1.7; the
paper's responses (20-25k-token budgets, thinking mode) are far longer than its reflections.

Each method trains on the same batch of prompts for the same number of updates, and every update
starts from the initial weights (student and teacher are reset before it; optimiser, playbook and
step counter carry on). Rollouts are seeded by step, so RESD (N=1) and SDPO (N=1) sample exactly
the same responses at every update and their rollout and student phases do the same work; only
what the method adds differs. Without the reset, one update of training makes the two students
sample different answers, and on this CPU one 128-token answer more in a batch moved a rollout
phase by 30%. The methods take turns update by update (RESD 1, SDPO 1, GRPO 1, RESD 2, ...), so
that a machine that speeds up or slows down during the run (CPU frequency, other tenants: 30%
between two runs of this script here) touches every method alike. The first `--warmup` updates
of each method are run but not timed: the first passes of a process pay one-off costs (page
faults on fresh buffers, allocator growth; 2x on the first student step on this CPU). The table
shows the mean seconds per timed update of each phase (rollout, scoring, reflection, curation,
teacher forward, student forward/backward) and the ratios of RESD's step to SDPO's and GRPO's.
Targets (issue 4): RESD <= 1.5x SDPO and <= 0.5x GRPO.
"""

from __future__ import annotations

import argparse
import copy
import gc
import sys
import tempfile
from pathlib import Path

PHASES = ("rollout", "scoring", "reflection", "curation", "teacher_forward", "student_step", "weight_sync", "step")
# Work done, so that a reader can tell a method that is slower from one that was given more to do.
SIZES = (("tokens/rollout", "completion_tokens_mean"), ("tokens/teacher prompt", "teacher/prompt_tokens_mean"))
METHODS = (("RESD (N=1)", "resd", 1), ("SDPO (N=1)", "sdpo", 1), ("GRPO (G=8)", "grpo", 8))
TARGETS = {"RESD/SDPO": 1.5, "RESD/GRPO": 0.5}


def make_trainer(method: str, n: int, model, tokenizer, args, out: Path, backend: str):
    from resd.train import RESDTrainer, load_config

    cfg = load_config(
        method=method, model=args.model, env=args.env, num_generations=n, batch_size=args.batch_size,
        max_batches=1, inner_updates=args.warmup + args.updates, max_completion_length=args.max_new_tokens,
        generation_batch_size=args.generation_batch_size, micro_batch_size=args.micro_batch_size,
        seed=args.seed, eval_every=0, progress=False, output_dir=str(out / f"{method}-{backend}"),
        learning_rate=1e-6, warmup_steps=0, generation={"backend": backend},
        context={"reflection_max_new_tokens": args.context_tokens, "curation_max_new_tokens": args.context_tokens})
    trainer = RESDTrainer(cfg, model=copy.deepcopy(model), tokenizer=tokenizer)
    trainer.setup()
    return trainer


def reset_weights(trainer, initial: dict) -> None:
    """Student (and the EMA teacher's copy) back to the initial weights, in place."""
    trainer.student.load_state_dict(initial)
    teacher = trainer.policy.teacher
    teacher_copy = getattr(teacher, "model", None) if teacher is not None else None
    if teacher_copy is not None:
        teacher_copy.load_state_dict(initial)
    trainer.generator.sync(trainer.student)  # the vLLM engine samples from the reset weights too


def run_interleaved(model, tokenizer, args, out: Path, backends: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Per method (and backend), the mean seconds per timed update of each phase.

    One backend: the three methods take turns update by update. Both backends: each method's HF and
    vLLM trainers take turns, one method after the other: six trainers (weights, optimiser, EMA
    teacher each) and three vLLM engines alive at once do not fit in 24 GiB, and a machine that
    swaps or evicts its page cache times nothing but that. The HF/vLLM ratios are then interleaved;
    the ratios between methods come from consecutive blocks of the same run."""
    initial = copy.deepcopy(model.state_dict())
    groups = [list(METHODS)] if len(backends) == 1 else [[m] for m in METHODS]
    results: dict[str, dict[str, float]] = {}
    for methods in groups:
        trainers = {f"{label} {b}" if len(backends) > 1 else label: make_trainer(method, n, model, tokenizer, args,
                                                                                  out, b)
                    for label, method, n in methods for b in backends}
        tasks = next(iter(trainers.values())).batches[0]  # same seed: the same first batch for every method
        timed: dict[str, list[dict]] = {label: [] for label in trainers}
        for update in range(args.warmup + args.updates):
            for label, trainer in trainers.items():
                print(f"update {update + 1}/{args.warmup + args.updates}: {label}"
                      f"{' (warm-up, untimed)' if update < args.warmup else ''} ...", file=sys.stderr, flush=True)
                reset_weights(trainer, initial)
                record = trainer.step(tasks)
                if update >= args.warmup:
                    timed[label].append(record)
        for trainer in trainers.values():
            trainer.close()
        del trainers
        gc.collect()
        keys = [f"time/{p}" for p in PHASES] + [key for _, key in SIZES]
        results.update({label: {k: sum(float(r.get(k, 0.0)) for r in rows) / len(rows) for k in keys}
                        for label, rows in timed.items()})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="model spec (default smollm2-135m; tiny-random is quick)")
    parser.add_argument("--env", default="bouncingsim-easy",
                        help="environment (default bouncingsim-easy, the task of the paper's latency figure)")
    parser.add_argument("--batch-size", type=int, default=4, help="prompts per batch (default 4)")
    parser.add_argument("--updates", type=int, default=2, help="inner updates K on the batch (default 2)")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="tokens per rollout (default 512)")
    parser.add_argument("--context-tokens", type=int, default=48,
                        help="token budget of each reflection and curation answer (default 48; the paper's "
                             "responses are ~100x longer than its reflections, so keep this below --max-new-tokens)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed updates before the timed ones (default 1)")
    parser.add_argument("--generation-batch-size", type=int, default=16)
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=("hf", "vllm", "both"), default="hf",
                        help="generation engine (default hf; both: HF and vLLM side by side)")
    parser.add_argument("--out", default=None, help="keep the run directories here (default: a temp dir)")
    args = parser.parse_args(argv)

    from resd.models import load

    model, tokenizer = load(args.model)
    backends = ("hf", "vllm") if args.backend == "both" else (args.backend,)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        results = run_interleaved(model, tokenizer, args, out, backends)

    print(f"\nseconds per update (mean over {args.updates} updates after {args.warmup} untimed, each from the initial "
          f"weights; {args.batch_size} prompts, {args.max_new_tokens} rollout tokens, {args.context_tokens} "
          f"reflection/curation tokens, model {args.model}, {' and '.join(backends)} engine)")
    for backend in backends:
        labels = [f"{m[0]} {backend}" if len(backends) > 1 else m[0] for m in METHODS]
        print(f"\n{'phase (s)':<22}" + "".join(f"{label:>16}" for label in labels))
        for phase in PHASES:
            print(f"{phase:<22}" + "".join(f"{results[label][f'time/{phase}']:>16.2f}" for label in labels))
        for name, key in SIZES:
            print(f"{name:<22}" + "".join(f"{results[label][key]:>16.1f}" for label in labels))
        resd, sdpo, grpo = (results[label]["time/step"] for label in labels)
        ratios = {"RESD/SDPO": resd / sdpo, "RESD/GRPO": resd / grpo}
        print()
        for name, value in ratios.items():
            verdict = "PASS" if value <= TARGETS[name] else "MISS"
            print(f"{name:<10} step ratio {value:6.2f}   target <= {TARGETS[name]:.1f}   {verdict}   ({backend})")
        if backend == "vllm":
            share = results[labels[0]]["time/weight_sync"] / results[labels[0]]["time/step"]
            print(f"weight sync share of a RESD update {share:6.3f}   target <= 0.05   {'PASS' if share <= 0.05 else 'MISS'}")
    if len(backends) > 1:
        print()
        for label, _, _ in METHODS:
            speedup = results[f"{label} hf"]["time/step"] / results[f"{label} vllm"]["time/step"]
            target = " target >= 1.5   " + ("PASS" if speedup >= 1.5 else "MISS") if label.startswith("RESD") else ""
            print(f"{label:<12} update HF / vLLM {speedup:6.2f}{target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
