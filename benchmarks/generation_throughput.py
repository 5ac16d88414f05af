"""Generation throughput: our rollout path (`resd.generation.sampling.sample`) vs plain `model.generate`,
and, with `--backend vllm`, the vLLM engine (`resd.generation.engines.VLLMEngine`) vs our HF sampler.

All sides get the same chat prompts, samples per prompt, sampling settings (temperature, top-p, no
top-k) and token budget. Throughput is generated tokens (up to and including EOS, padding not
counted) per second, summed over the repeats, which alternate between the sides so that machine
noise hits all alike. Targets: ours >= 0.9x plain; vLLM >= 2x ours at 512 new tokens.

    python benchmarks/generation_throughput.py                       # SmolLM2-135M, CPU
    python benchmarks/generation_throughput.py --backend vllm --samples 4 --max-new-tokens 512
    python benchmarks/generation_throughput.py --model tiny-random   # seconds, smoke check
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Result, add_common_arguments, device_name, print_results, task_prompts  # noqa: E402


def plain_generate(model, tokenizer, prompts, *, batch_size, max_new_tokens, temperature, top_p, samples) -> int:
    """The reference: chat template, left-padded batches in the given order, `model.generate`."""
    import torch

    texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False)
             for p in prompts for _ in range(samples)]
    eos = tokenizer.eos_token_id
    generated = 0
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(model.device)
            out = model.generate(**enc, do_sample=True, temperature=temperature, top_p=top_p, top_k=0,
                                 max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
            for row in out[:, enc["input_ids"].shape[1]:].tolist():
                generated += row.index(eos) + 1 if eos in row else len(row)
    return generated


def ours_generate(model, tokenizer, prompts, *, batch_size, max_new_tokens, temperature, top_p, samples) -> int:
    from resd.generation.sampling import sample

    rollouts = sample(model, tokenizer, prompts, n=samples, max_new_tokens=max_new_tokens, temperature=temperature,
                      top_p=top_p, batch_size=batch_size)
    return sum(len(r.completion_ids) for row in rollouts for r in row)


def engine_generate(engine, prompts, *, max_new_tokens, temperature, top_p, samples, **_) -> int:
    rollouts = engine.sample(prompts, n=samples, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
    return sum(len(r.completion_ids) for row in rollouts for r in row)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--prompts", type=int, default=16, help="number of prompts per repeat")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--samples", type=int, default=1, help="samples per prompt (GRPO/SDPO groups)")
    parser.add_argument("--backend", choices=("hf", "vllm"), default="hf",
                        help="vllm: also time the vLLM engine against our HF sampler")
    args = parser.parse_args(argv)

    import torch

    from resd.models import load

    torch.manual_seed(args.seed)
    model, tokenizer = load(args.model)
    prompts = task_prompts(args.env, args.prompts)
    settings = dict(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                    temperature=args.temperature, top_p=args.top_p, samples=args.samples)
    sides = {"plain": lambda: plain_generate(model, tokenizer, prompts, **settings),
             "ours": lambda: ours_generate(model, tokenizer, prompts, **settings)}
    if args.backend == "vllm":
        from resd.generation.engines import EngineSettings, VLLMEngine

        engine = VLLMEngine(model, tokenizer, EngineSettings(backend="vllm"), max_model_len=2048, seed=args.seed)
        sides["vllm"] = lambda: engine_generate(engine, prompts, **settings)

    # Warm-up (allocator, kernels) on a small slice, untimed.
    plain_generate(model, tokenizer, prompts[: args.batch_size], **{**settings, "max_new_tokens": 4})
    ours_generate(model, tokenizer, prompts[: args.batch_size], **{**settings, "max_new_tokens": 4})
    if "vllm" in sides:
        engine_generate(engine, prompts[: args.batch_size], **{**settings, "max_new_tokens": 4})

    totals = {name: [0, 0.0] for name in sides}
    for _ in range(args.repeats):
        for name, fn in sides.items():
            start = time.perf_counter()
            totals[name][0] += fn()
            totals[name][1] += time.perf_counter() - start
    if "vllm" in sides:
        engine.close()
    rate = {name: tokens / seconds for name, (tokens, seconds) in totals.items()}
    results = [Result("generated tokens/s (ours vs plain)", rate["ours"], rate["plain"], "tok/s", 0.9,
                      note=f"tokens ours {totals['ours'][0]}, plain {totals['plain'][0]}")]
    if "vllm" in rate:
        results.append(Result("generated tokens/s (vLLM vs ours)", rate["vllm"], rate["ours"], "tok/s", 2.0,
                              note=f"tokens vLLM {totals['vllm'][0]}; target set for 512 new tokens"))
    print_results("generation throughput: resd.generation.sampling.sample vs model.generate"
                  + (" and the vLLM engine" if "vllm" in rate else ""), results,
                  {"model": args.model, "device": device_name(), "prompts": args.prompts, "repeats": args.repeats,
                   "threads": torch.get_num_threads(), **settings})
    return 0


if __name__ == "__main__":
    sys.exit(main())
