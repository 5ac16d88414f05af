"""Tensors for scoring sampled responses: [left-padded prompt | response | right padding].

The student scores (student prompt + response) and the teacher scores (teacher prompt + the same
response tokens), paper §2 Eq. 1. Laying each row out as a left-padded prompt followed by the
right-padded response puts every response at the same columns, so the logits of the response
tokens are one slice for the whole batch, and `logits_to_keep` spares the [B, prompt, V] part.
Position ids follow the attention mask, as in `generate`, so scoring matches sampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Packed:
    input_ids: torch.Tensor        # [B, P + C]
    attention_mask: torch.Tensor   # [B, P + C]
    position_ids: torch.Tensor     # [B, P + C]
    completion_ids: torch.Tensor   # [B, C] (pad where the response is shorter)
    completion_mask: torch.Tensor  # [B, C] float, 1 on real response tokens
    prompt_width: int              # P


def pack(prompts: list[list[int]], completions: list[list[int]], pad_id: int,
         device: torch.device | str = "cpu") -> Packed:
    """Left-pad prompts to a common width, right-pad responses, and concatenate."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts for {len(completions)} responses")
    p_width = max(len(p) for p in prompts)
    c_width = max(1, max(len(c) for c in completions))
    rows, masks, comp, comp_mask = [], [], [], []
    for p, c in zip(prompts, completions):
        left = p_width - len(p)
        right = c_width - len(c)
        rows.append([pad_id] * left + list(p) + list(c) + [pad_id] * right)
        masks.append([0] * left + [1] * (len(p) + len(c)) + [0] * right)
        comp.append(list(c) + [pad_id] * right)
        comp_mask.append([1.0] * len(c) + [0.0] * right)
    attention_mask = torch.tensor(masks, dtype=torch.long, device=device)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return Packed(
        input_ids=torch.tensor(rows, dtype=torch.long, device=device),
        attention_mask=attention_mask,
        position_ids=position_ids,
        completion_ids=torch.tensor(comp, dtype=torch.long, device=device),
        completion_mask=torch.tensor(comp_mask, dtype=torch.float32, device=device),
        prompt_width=p_width,
    )


def response_logits(model: torch.nn.Module, packed: Packed, temperature: float = 1.0) -> torch.Tensor:
    """Logits `[B, C, V]` whose row t is the model's distribution for response token t.

    The token at column P + t is predicted by the logits at column P + t - 1, so we keep the last
    C + 1 positions and drop the final one. Logits are divided by the sampling temperature, as
    the rollout was drawn from softmax(z / T) (T = 0, greedy, leaves them unscaled).
    """
    c_width = packed.completion_ids.shape[1]
    out = model(
        input_ids=packed.input_ids,
        attention_mask=packed.attention_mask,
        position_ids=packed.position_ids,
        use_cache=False,
        logits_to_keep=c_width + 1,
    )
    logits = out.logits[:, :-1, :]
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    return logits


@torch.no_grad()
def answer_logprobs(model: torch.nn.Module, prompt_ids: list[int], answers: list[list[int]], pad_id: int,
                    temperature: float = 1.0) -> list[float]:
    """sum_t log p(answer_t | prompt, answer_<t) for each answer, scored as the update scores a
    response (`pack`, `response_logits`, `sequence_logprobs`): what `resd probe` compares."""
    from resd.distill.losses import sequence_logprobs

    device = next(model.parameters()).device
    packed = pack([prompt_ids] * len(answers), answers, pad_id, device)
    logprobs = sequence_logprobs(response_logits(model, packed, temperature), packed.completion_ids)
    return (logprobs * packed.completion_mask).sum(-1).tolist()
