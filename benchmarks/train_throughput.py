"""Training throughput: our student update vs a plain forward/backward of the same model and batch.

Ours: the trainer's own update (`resd.policy.update.PolicyUpdate.apply`, distillation) on a batch of real
sampled responses with teacher prompts: student forward on the response positions, top-k
self-distillation loss, backward, AdamW step. The teacher's no-grad forward is timed separately
by the trainer and reported on its own line; the ratio compares the student part, the piece that
corresponds to a plain training step.
Reference: the same model (an identical copy), the same packed token rows and micro-batches,
`model(input_ids, labels=...)` cross-entropy, backward, AdamW step.
Throughput = response tokens per second. Target: ours >= 0.8x plain.

    python benchmarks/train_throughput.py                       # SmolLM2-135M, CPU (minutes)
    python benchmarks/train_throughput.py --model tiny-random   # seconds, smoke check
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Result, add_common_arguments, device_name, print_results, task_prompts  # noqa: E402


def teacher_messages(prompt: list[dict], response: str) -> list[dict]:
    """A teacher prompt of realistic length: the task, the previous attempt and feedback."""
    task = prompt[-1]["content"]
    return [{"role": "user", "content": f"{task}\n\nA previous attempt:\n{response}\n\nFeedback: the attempt did "
                                        f"not satisfy the instruction. Solve the task correctly."}]


def plain_step(model, optimizer, rows, pad_id, micro_batch_size, device, max_grad_norm) -> float:
    """Cross-entropy forward/backward on the response tokens of the same rows; one AdamW step."""
    import torch

    from resd.policy.packing import pack

    start = time.perf_counter()
    model.train()
    total = sum(len(r.completion_ids) for r in rows)
    for i in range(0, len(rows), micro_batch_size):
        chunk = rows[i:i + micro_batch_size]
        packed = pack([r.prompt_ids for r in chunk], [r.completion_ids for r in chunk], pad_id, device)
        labels = packed.input_ids.clone()
        labels[:, :packed.prompt_width] = -100
        labels[:, packed.prompt_width:][packed.completion_mask == 0] = -100
        out = model(input_ids=packed.input_ids, attention_mask=packed.attention_mask,
                    position_ids=packed.position_ids, labels=labels, use_cache=False)
        (out.loss * packed.completion_mask.sum() / total).backward()
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--batch", type=int, default=8, help="sequences per update")
    parser.add_argument("--micro-batch-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=128, help="response length of the sampled batch")
    args = parser.parse_args(argv)

    import torch

    from resd.generation.sampling import encode_prompts, sample
    from resd.models import load
    from resd.train.build import build_accelerator, build_policy, build_update
    from resd.train.config import load_config
    from resd.train.ranks import Ranks
    from resd.policy.update import PhaseTimes, UpdateItem

    torch.manual_seed(args.seed)
    model, tokenizer = load(args.model)
    prompts = task_prompts(args.env, args.batch)
    rollouts = sample(model, tokenizer, prompts, n=1, max_new_tokens=args.max_new_tokens, seed=args.seed)
    teacher_ids = encode_prompts(tokenizer, [teacher_messages(p, r[0].text) for p, r in zip(prompts, rollouts)])
    rows = [UpdateItem(r[0].prompt_ids, r[0].completion_ids, [1.0] * len(r[0].completion_ids), teacher_prompt_ids=t)
            for r, t in zip(rollouts, teacher_ids) if r[0].completion_ids]
    tokens = sum(len(r.completion_ids) for r in rows)

    reference = copy.deepcopy(model)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, [], method="resd", env=args.env, model=args.model, output_dir=tmp,
                          micro_batch_size=args.micro_batch_size, warmup_steps=0, progress=False)
        accelerator = build_accelerator(cfg, None)
        policy = build_policy(cfg, accelerator, model=model, tokenizer=tokenizer)
        update = build_update(cfg, policy, accelerator, Ranks(accelerator))
        ref_opt = torch.optim.AdamW(reference.parameters(), lr=cfg.learning_rate)
        device = accelerator.device
        reference.to(device)

        def ours() -> PhaseTimes:
            update.times = PhaseTimes()
            update.apply(rows)
            return update.times

        # Warm-up, untimed.
        ours()
        plain_step(reference, ref_opt, rows, policy.pad_id, args.micro_batch_size, device, cfg.max_grad_norm)
        student, teacher, plain = 0.0, 0.0, 0.0
        for _ in range(args.repeats):  # alternate so machine noise hits both alike
            plain += plain_step(reference, ref_opt, rows, policy.pad_id, args.micro_batch_size, device,
                                cfg.max_grad_norm)
            t = ours()
            student += t.student_step
            teacher += t.teacher_forward

    n = args.repeats
    print_results("training throughput: RESD student update vs plain forward/backward", [
        Result("student update tokens/s", tokens * n / student, tokens * n / plain, "tok/s", 0.8,
               note="loss + backward + AdamW, teacher excluded"),
        Result("update incl. teacher forward tok/s", tokens * n / (student + teacher), tokens * n / plain, "tok/s",
               None, note="information: what one distillation update costs in total"),
    ], {"model": args.model, "device": device_name(), "sequences": len(rows), "response tokens": tokens,
        "micro_batch_size": args.micro_batch_size, "repeats": n, "top-k": cfg.distillation_topk})
    return 0


if __name__ == "__main__":
    sys.exit(main())
