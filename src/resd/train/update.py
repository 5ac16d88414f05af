"""One policy update: typed items in, one optimiser step out (paper Alg. 1 lines 16-19).

    items  = distillation_items(...) or policy_gradient_items(...)   one UpdateItem per sample
    result = PolicyUpdate.apply(items, n_tokens)                      forward, backward, AdamW step

The per-token loss comes from `resd.distill.per_token_loss` (one dispatch over the modes); it is
reduced here, once, by the token-mean form of the paper's Eq. 3:

    loss = sum_i w_i sum_t m_it l_it / n_tokens

with `n_tokens` the masked tokens of the whole update over all ranks. Each rank computes its
share of the numerator and divides by that global count, times the number of ranks because DDP
averages gradients; the gradient then equals a single process's on the same items.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import torch

from resd.distill.losses import LossSettings, per_token_loss, sequence_logprobs
from resd.distill.masks import error_suffix_mask
from resd.train.packing import pack, response_logits
from resd.train.ranks import Ranks


@dataclass(frozen=True)
class UpdateItem:
    """One sample's share of an update."""

    prompt_ids: list[int]
    """The student's prompt (chat-templated)."""
    completion_ids: list[int]
    """The sampled response tokens (what both student and teacher score)."""
    mask: list[float]
    """1 on the response tokens that count (ROSD: from the first error on), else 0."""
    weight: float = 1.0
    """w_i: the sample's weight (success-rate rebalancing, App. B Eq. 2)."""
    teacher_prompt_ids: list[int] | None = None
    """Distillation: the teacher's prompt, followed by the same response tokens."""
    advantage: float = 0.0
    """Policy gradient: the sample's group-relative advantage A_i."""
    succeeded: bool = False
    """Whether the environment accepted the sample (signs the teacher advantage, see UpdateResult)."""


@dataclass
class UpdateResult:
    loss: float = 0.0
    """The reduced loss of the update (Eq. 3, token mean)."""
    distill_tokens: int = 0
    """n_tokens: the masked tokens the loss is averaged over."""
    updated: bool = False
    """False when nothing carried a learning signal and no optimiser step was taken."""
    grad_norm: float = 0.0
    """Gradient norm before clipping."""
    teacher_advantage: float | None = None
    """Token mean of +-(log p_teacher - log p_student) of the sampled tokens, + on accepted samples,
    - on rejected ones: > 0 when the teacher prefers what the environment accepted more than the
    student does (the training-time counterpart of `resd probe`); None without a teacher."""
    divergence: float | None = None
    """Token mean of the unweighted teacher-student divergence the loss minimises (for the
    sampled-token mode, the sampled estimate of KL(student || teacher)); None without a teacher."""
    entropy: float | None = None
    """Token mean of -log p_student of the sampled tokens: an estimate of the student's entropy on
    its own samples (a collapse shows as this falling towards 0)."""

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {"loss": self.loss, "distill_tokens": self.distill_tokens, "grad_norm": self.grad_norm}
        for name in ("teacher_advantage", "divergence", "entropy"):
            value = getattr(self, name)
            if value is not None:
                out[f"health/{name}"] = value
        return out


@dataclass
class PhaseTimes:
    """Seconds spent in the two phases of an update (added to the step's timing record)."""

    teacher_forward: float = 0.0
    student_step: float = 0.0


def distillation_items(samples: Sequence[Any], contexts: Sequence[Any], teacher_prompt_ids: Sequence[list[int] | None],
                       weights: Sequence[float], success_threshold: float) -> list[UpdateItem]:
    """One item per distilled sample with a response: its teacher prompt, weight, and the mask
    from its context's first distilled token on."""
    items = []
    for s, c, teacher_ids, w in zip(samples, contexts, teacher_prompt_ids, weights, strict=True):
        if not c.distill or not s.completion_ids:
            continue
        mask = [float(m) for m in error_suffix_mask(len(s.completion_ids), c.distill_from)]
        items.append(UpdateItem(s.prompt_ids, s.completion_ids, mask, weight=float(w),
                                teacher_prompt_ids=list(teacher_ids),
                                succeeded=s.outcome.reward >= success_threshold))
    return items


def with_policy_gradient(items: list[UpdateItem], samples: Sequence[Any], advantages: Sequence[float]
                         ) -> list[UpdateItem]:
    """dGRPO-style: every sample also carries its group advantage. Distilled items keep their
    teacher and mask; the other samples join with no distilled token (their teacher prompt is the
    student's own, masked out) when their advantage is not 0."""
    by_ids = {(tuple(it.prompt_ids), tuple(it.completion_ids)): it for it in items}
    out = []
    for s, a in zip(samples, advantages, strict=True):
        if not s.completion_ids:
            continue
        item = by_ids.pop((tuple(s.prompt_ids), tuple(s.completion_ids)), None)
        if item is not None:
            out.append(replace(item, advantage=float(a)))
        elif a != 0.0:
            out.append(UpdateItem(s.prompt_ids, s.completion_ids, [0.0] * len(s.completion_ids),
                                  teacher_prompt_ids=list(s.prompt_ids), advantage=float(a)))
    return out


def policy_gradient_items(samples: Sequence[Any], advantages: Sequence[float]) -> list[UpdateItem]:
    """One item per sample with a response, carrying its advantage (GRPO)."""
    return [UpdateItem(s.prompt_ids, s.completion_ids, [1.0] * len(s.completion_ids), advantage=float(a),
                       succeeded=a > 0)
            for s, a in zip(samples, advantages, strict=True) if s.completion_ids]


@dataclass
class PolicyUpdate:
    """Micro-batched forward/backward over this rank's share of the items and one optimiser step.

    `model` is the (possibly DDP-wrapped) module that takes gradients, `student` the plain one;
    `teacher` an `EMATeacher` (distillation) or None (policy gradient)."""

    model: torch.nn.Module
    student: torch.nn.Module
    teacher: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    accelerator: Any
    ranks: Ranks
    loss: LossSettings
    pad_id: int
    micro_batch_size: int = 4
    max_grad_norm: float | None = 1.0
    temperature: float = 1.0
    times: PhaseTimes = field(default_factory=PhaseTimes)

    def apply(self, items: list[UpdateItem], n_tokens: int | None = None) -> UpdateResult:
        """Take one optimiser step on `items` (the same list on every rank). `n_tokens` defaults to
        the items' masked tokens; GRPO passes the tokens of every sample of the batch, including
        those whose zero advantage made them items of no consequence."""
        n_tokens = n_tokens if n_tokens is not None else int(sum(sum(it.mask) for it in items))
        if not items or n_tokens == 0:
            return UpdateResult()  # nothing to learn from (e.g. SDPO with no success and no feedback)
        world = self.ranks.world
        mine = self.ranks.share(items)
        n_micro = math.ceil(math.ceil(len(items) / world) / self.micro_batch_size)
        weighted_sum = torch.zeros((), dtype=torch.float64)
        self._health = torch.zeros(4, dtype=torch.float64)  # tokens, advantage, divergence, -log p sums
        self.model.train()
        for m in range(n_micro):
            chunk = mine[m * self.micro_batch_size:(m + 1) * self.micro_batch_size]
            # A rank with fewer items still runs every backward pass DDP expects; its chunk counts 0.
            dummy = not chunk
            if dummy:
                chunk = [replace(items[0], weight=0.0)]
            last = m == n_micro - 1
            with contextlib.nullcontext() if last else self.accelerator.no_sync(self.model):
                part = self._weighted_sum(chunk, dummy)
                # Eq. 3, token mean: this rank's share of sum_i w_i sum_t m_it l_it over the global count.
                loss = part * (world / n_tokens)
                t0 = time.perf_counter()
                self.accelerator.backward(loss)
                self.times.student_step += time.perf_counter() - t0
            weighted_sum += part.detach().double().cpu()
        t0 = time.perf_counter()
        # The norm is measured either way (a health signal); with no limit the clip is a no-op.
        limit = self.max_grad_norm if self.max_grad_norm is not None else float("inf")
        grad_norm = float(self.accelerator.clip_grad_norm_(self.model.parameters(), limit))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.times.student_step += time.perf_counter() - t0
        total = sum(self.ranks.gather([float(weighted_sum)]))
        tokens, advantage, divergence, nll = [sum(col) for col in zip(*self.ranks.gather([self._health.tolist()]))]
        teacher = self.teacher is not None and tokens > 0
        return UpdateResult(loss=total / n_tokens, distill_tokens=n_tokens, updated=True, grad_norm=grad_norm,
                            teacher_advantage=advantage / tokens if teacher else None,
                            divergence=divergence / tokens if teacher else None,
                            entropy=nll / tokens if tokens > 0 else None)

    def _weighted_sum(self, chunk: list[UpdateItem], dummy: bool) -> torch.Tensor:
        """sum_i w_i sum_t m_it l_it over the chunk, with a graph."""
        device = self.accelerator.device
        width = max(len(it.completion_ids) for it in chunk)
        mask = torch.tensor([it.mask + [0.0] * (width - len(it.mask)) for it in chunk], dtype=torch.float32,
                            device=device)
        weights = torch.tensor([it.weight for it in chunk], dtype=torch.float32, device=device)
        student_in = pack([it.prompt_ids for it in chunk], [it.completion_ids for it in chunk], self.pad_id, device)

        teacher_logits = None
        if self.teacher is not None and not dummy:
            t0 = time.perf_counter()
            teacher_in = pack([it.teacher_prompt_ids for it in chunk], [it.completion_ids for it in chunk],
                              self.pad_id, device)
            with torch.no_grad(), self.teacher.weights_in(self.student) as teacher_model:
                teacher_logits = response_logits(teacher_model, teacher_in, self.temperature)
            self.times.teacher_forward += time.perf_counter() - t0

        t0 = time.perf_counter()
        logits = response_logits(self.model, student_in, self.temperature)
        if self.teacher is not None and teacher_logits is None:
            teacher_logits = logits.detach()  # a dummy chunk: zero loss that still touches every weight
        advantages = torch.tensor([it.advantage for it in chunk], dtype=torch.float32, device=device)
        succeeded = torch.tensor([it.succeeded for it in chunk], dtype=torch.bool, device=device)
        per_token = per_token_loss(self.loss, logits, student_in.completion_ids, mask,
                                   teacher_logits=teacher_logits, advantages=advantages,
                                   pg_mask=student_in.completion_mask, succeeded=succeeded)
        part = (per_token * weights[:, None]).sum()
        if dummy:
            part = part * 0.0
        else:
            self._observe(logits, teacher_logits, per_token, student_in.completion_ids, mask, chunk)
        self.times.student_step += time.perf_counter() - t0
        return part

    @torch.no_grad()
    def _observe(self, logits: torch.Tensor, teacher_logits: torch.Tensor | None, per_token: torch.Tensor,
                 ids: torch.Tensor, mask: torch.Tensor, chunk: list[UpdateItem]) -> None:
        """Add this chunk's token sums for the health signals (UpdateResult)."""
        student_lp = sequence_logprobs(logits.detach(), ids)
        health = [mask.sum(), 0.0, 0.0, (-student_lp * mask).sum()]
        if teacher_logits is not None:
            teacher_lp = sequence_logprobs(teacher_logits, ids)
            sign = torch.tensor([1.0 if it.succeeded else -1.0 for it in chunk], device=mask.device)
            health[1] = (sign[:, None] * (teacher_lp - student_lp) * mask).sum()
            sampled = self.loss.mode == "sampled_token"
            health[2] = ((student_lp - teacher_lp) * mask).sum() if sampled else (per_token.detach() * mask).sum()
        self._health += torch.tensor([float(x) for x in health], dtype=torch.float64)
