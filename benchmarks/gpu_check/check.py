"""The GPU check a lent machine runs unchanged: offline, on the image's own torch, transformers,
accelerate and peft (no vLLM, no hub), with a random-weight model of the default model's shape
(SmolLM2-135M: 30 layers, hidden 576, vocabulary 49152) built there from the carried config and
tokenizer. Measures, in bf16 mixed precision (float32 master weights, bf16 compute) on the HF
engine:

  1. generated tokens/s: resd's sampler vs plain `model.generate` (same prompts, samples, budget);
  2. one full training iteration of RESD, SDPO and GRPO (rollout, scoring, context engine, teacher
     forward, loss, AdamW step, EMA) on the toy letters environment: seconds per phase, tokens,
     whether the update happened, and the peak GPU memory of each.

Exit status: 0 when everything was measured, 2 when only part was (the failures are printed),
1 when nothing was. Results also go to $OUT/gpu_check.json when OUT is set.

    bash benchmarks/gpu_check/prepare.sh      # here, once (wheels + config/tokenizer, ~6 MiB)
    bash benchmarks/gpu_check/run.sh          # there (or here with --allow-cpu --layers 2 to smoke it)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
CARRIED = ROOT / ".gpu_check"


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "accelerate", "peft", "trl", "datasets"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "missing"
    return out


def build_model(directory: Path, layers: int | None, seed: int = 0) -> dict[str, Any]:
    """A random-weight model of the carried config's shape (and its real tokenizer) saved to `directory`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if not (CARRIED / "config.json").exists():
        raise FileNotFoundError(f"{CARRIED}/config.json is missing: run benchmarks/gpu_check/prepare.sh here first "
                                "and carry .gpu_check")
    config = AutoConfig.from_pretrained(CARRIED)
    if layers is not None:
        config.num_hidden_layers = layers
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(CARRIED)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return {"layers": config.num_hidden_layers, "hidden": config.hidden_size, "vocab": config.vocab_size,
            "parameters": sum(p.numel() for p in model.parameters())}


def measure_generation(model_dir: Path, device: str, prompts: int, samples: int, max_new_tokens: int) -> dict[str, Any]:
    """Tokens/s of resd's sampler and of plain generate on the same bf16 model and prompts."""
    import torch
    from generation_throughput import ours_generate, plain_generate

    from resd.envs import get
    from resd.models import load

    model, tokenizer = load(str(model_dir), dtype="bfloat16", device=device)
    env = get("toyenv:LetterEnv", train_size=prompts, test_size=1)
    chats = [t.prompt for t in env.tasks("train")[:prompts]]
    args = dict(batch_size=prompts * samples, max_new_tokens=max_new_tokens, temperature=1.0, top_p=0.95,
                samples=samples)
    out: dict[str, Any] = {}
    ours_generate(model, tokenizer, chats[:2], **{**args, "max_new_tokens": 8})  # warm-up (kernels, allocator)
    for name, fn in (("plain_generate", plain_generate), ("resd_sampler", ours_generate)):
        _sync(device)
        started = time.perf_counter()
        tokens = fn(model, tokenizer, chats, **args)
        _sync(device)
        seconds = time.perf_counter() - started
        out[name] = {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}
    out["ratio_resd_over_plain"] = out["resd_sampler"]["tokens_per_s"] / out["plain_generate"]["tokens_per_s"]
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def measure_step(method: str, model_dir: Path, run_dir: Path, device: str, max_new_tokens: int,
                 steps: int) -> dict[str, Any]:
    """One warm-up and `steps` timed iterations of `method` (RESDTrainer.step) in bf16 mixed precision."""
    import torch
    from accelerate.state import AcceleratorState, GradientState

    from resd.train.config import config_from_dict
    from resd.train.trainer import RESDTrainer

    AcceleratorState._reset_state(True)  # each method builds its own accelerator in this process
    GradientState._reset_state()
    cfg = config_from_dict({
        "method": method, "env": "toyenv:LetterEnv", "env_options": {"train_size": 32, "test_size": 2},
        "model": str(model_dir), "dtype": "bfloat16", "batch_size": 8, "max_completion_length": max_new_tokens,
        "generation_batch_size": 64, "micro_batch_size": 8, "learning_rate": 1e-6, "warmup_steps": 0,
        "eval_every": 0, "progress": False, "output_dir": str(run_dir), "max_teacher_prompt_length": 2048,
        "context": {"reflection_max_new_tokens": 64, "curation_max_new_tokens": 64}})
    trainer = RESDTrainer(cfg)
    trainer.setup()
    student = next(trainer.student.parameters())
    tasks = trainer.env.tasks("train")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.step(tasks[:8])  # warm-up
    records = [trainer.step(tasks[8 * (i + 1):8 * (i + 2)]) for i in range(steps)]
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    keys = ("time/step", "time/rollout", "time/scoring", "time/reflection", "time/curation", "time/teacher_forward",
            "time/student_step", "time/weight_sync")
    result = {
        "precision": f"{str(student.dtype).replace('torch.', '')} master / {cfg.dtype} compute",
        "strategy": cfg.strategy,
        "updated_steps": sum(int(r.get("loss_tokens", 0) > 0) for r in records),
        "loss": [r["loss"] for r in records],
        "completion_tokens_mean": sum(r["completion_tokens_mean"] for r in records) / len(records),
        "samples_per_step": cfg.batch_size * cfg.num_generations,
        **{k.replace("time/", "s_"): sum(r.get(k, 0.0) for r in records) / len(records) for k in keys},
        "peak_gib": peak,
    }
    trainer.close()
    del trainer
    if device == "cuda":
        torch.cuda.empty_cache()
    return result


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def attempt(name: str, fn: Callable[[], dict[str, Any]], results: dict[str, Any], failures: list[str]) -> None:
    started = time.perf_counter()
    try:
        results[name] = fn()
        print(f"gpu_check: {name}: {json.dumps(results[name], default=str)} ({time.perf_counter() - started:.0f} s)",
              flush=True)
    except Exception as exc:  # noqa: BLE001 - each part reports its own failure; the exit code counts them
        failures.append(f"{name}: {type(exc).__name__}: {exc}")
        traceback.print_exc()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--allow-cpu", action="store_true", help="run without a GPU (a smoke test of this script)")
    parser.add_argument("--layers", type=int, default=None, help="fewer layers than the default model (smoke test)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    info: dict[str, Any] = {"versions": versions(), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    print(f"gpu_check: {json.dumps(info)}", flush=True)
    if not torch.cuda.is_available() and not args.allow_cpu:
        print("gpu_check: no CUDA device: nothing measured (pass --allow-cpu to smoke-test the script)")
        return 1
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results: dict[str, Any] = {"info": info}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="resd-gpu-check-") as tmp:
        model_dir = Path(tmp) / "model"
        attempt("model", lambda: build_model(model_dir, args.layers), results, failures)
        if "model" in results:
            attempt("generation", lambda: measure_generation(model_dir, device, args.prompts, args.samples,
                                                             args.max_new_tokens), results, failures)
            for method in ("resd", "sdpo", "grpo"):
                attempt(f"step_{method}", lambda m=method: measure_step(m, model_dir, Path(tmp) / m, device,
                                                                        args.max_new_tokens, args.steps),
                        results, failures)
    results["failures"] = failures
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_check.json").write_text(json.dumps(results, indent=2, default=str))
    measured = [k for k in ("generation", "step_resd", "step_sdpo", "step_grpo") if k in results]
    print(f"gpu_check: measured {', '.join(measured) or 'nothing'}; failed: {len(failures)}", flush=True)
    for line in failures:
        print(f"gpu_check: FAILED {line}", flush=True)
    if not measured:
        return 1
    return 0 if not failures else 2


if __name__ == "__main__":
    sys.exit(main())
