"""Peak memory of one RESD training step vs one SDPO step (target: RESD <= 1.1x SDPO).

Each method runs in its own fresh subprocess (so one cannot inherit the other's allocator high
water mark): load the model, note the resident memory, run `RESDTrainer` for `--steps` policy
updates on the same prompts with each method's preset (RESD: 1 rollout per prompt plus
reflection/curation; SDPO: groups of 8), and report the peak. On CPU the peak is the process's
resident set size, sampled every 5 ms and cross-checked with getrusage's maximum; on a GPU it is
`torch.cuda.max_memory_allocated`. Both the whole-process peak and the growth over the loaded model
are printed; the ratio uses the whole-process peak.

    python benchmarks/memory.py                       # SmolLM2-135M, CPU
    python benchmarks/memory.py --model tiny-random   # seconds, smoke check
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Result, add_common_arguments, device_name, print_results  # noqa: E402


def rss_bytes() -> int:
    """Current resident set size from /proc (Linux); falls back to the rusage maximum elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except OSError:
        return max_rss_bytes()


def max_rss_bytes() -> int:
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is KiB on Linux, bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


class PeakSampler:
    """Samples RSS in a background thread; `peak` is the highest value seen."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval, self.peak = interval, rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> "PeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def child(args: argparse.Namespace) -> None:
    """Measure one method; prints one JSON line."""
    import torch

    from resd.models import load
    from resd.train.config import load_config
    from resd.train.trainer import RESDTrainer

    model, tokenizer = load(args.model)
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, list(args.set), method=args.child, env=args.env, model=args.model,
                          output_dir=tmp, seed=args.seed, batch_size=args.batch, max_steps=args.steps,
                          max_completion_length=args.max_new_tokens, eval_at_start=False, eval_every=None,
                          eval_limit=1, eval_k=1, progress=False)
        if cuda:
            model.to("cuda")
            torch.cuda.reset_peak_memory_stats()
        loaded = rss_bytes()
        with PeakSampler() as sampler:
            trainer = RESDTrainer(cfg, model=model, tokenizer=tokenizer)
            trainer.train()
            trainer.close()
        result = {"method": args.child, "loaded_bytes": loaded, "peak_bytes": max(sampler.peak, max_rss_bytes()),
                  "cuda_peak_bytes": torch.cuda.max_memory_allocated() if cuda else None,
                  "num_generations": cfg.num_generations}
    print(json.dumps(result))


def measure(method: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--model", args.model, "--env", args.env,
           "--seed", str(args.seed), "--batch", str(args.batch), "--steps", str(args.steps),
           "--max-new-tokens", str(args.max_new_tokens)]
    for item in args.set:
        cmd += ["--set", item]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"the {method} measurement failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--batch", type=int, default=8, help="prompts per batch (same for both methods)")
    parser.add_argument("--steps", type=int, default=1, help="policy updates per measurement")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for both")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0

    resd, sdpo = measure("resd", args), measure("sdpo", args)
    mib = 2**20
    results = [
        Result("peak memory (whole process)", resd["peak_bytes"] / mib, sdpo["peak_bytes"] / mib, "MiB", 1.1,
               higher_is_better=False),
        Result("growth over the loaded model", (resd["peak_bytes"] - resd["loaded_bytes"]) / mib,
               (sdpo["peak_bytes"] - sdpo["loaded_bytes"]) / mib, "MiB", None, higher_is_better=False,
               note="information: optimiser state, EMA teacher, activations"),
    ]
    if resd["cuda_peak_bytes"] is not None:
        results.insert(0, Result("CUDA peak allocated", resd["cuda_peak_bytes"] / mib,
                                 sdpo["cuda_peak_bytes"] / mib, "MiB", 1.1, higher_is_better=False))
    print_results("peak memory: RESD step vs SDPO step (ours = RESD, reference = SDPO)", results, {
        "model": args.model, "device": device_name(), "env": args.env, "prompts per batch": args.batch,
        "rollouts per prompt": f"RESD {resd['num_generations']}, SDPO {sdpo['num_generations']}",
        "updates": args.steps, "max_new_tokens": args.max_new_tokens})
    return 0


if __name__ == "__main__":
    sys.exit(main())
