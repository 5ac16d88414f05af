"""One policy update: typed items in, one optimiser step out (paper Alg. 1 lines 16-19).

    batch  = update_items(samples, contexts, settings, tokenizer)    one UpdateItem per sample that teaches
    result = PolicyUpdate.apply(batch.items, batch.response_tokens)  forward, backward, AdamW step

The per-token loss comes from `resd.distill.per_token_loss` (one dispatch over the modes); it is
reduced here, once, by the token-mean form of the paper's Eq. 3:

    loss = sum_i w_i sum_t m_it l_it / n_tokens

with `n_tokens` chosen by `LossSettings.token_mean` (the masked tokens of the whole update, or
every sampled response token of the batch), counted over all ranks. Each rank computes its
share of the numerator and divides by that global count, times the number of ranks because DDP
averages gradients; the gradient then equals a single process's on the same items.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Sequence

import numpy as np
import torch

from resd.context import fit_teacher_prompt, teacher_messages, teacher_stats
from resd.distill.losses import (LossSettings, group_advantages, per_token_loss, sequence_logprobs,
                                 success_rate_weights)
from resd.distill.masks import error_suffix_mask
from resd.rollout import Sample, groups_of
from resd.policy.packing import pack, response_logits
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
    sample: int = -1
    """The sample's index in the step's batch (how items are matched to samples, never by content)."""


@dataclass
class UpdateResult:
    loss: float = 0.0
    """The reduced loss of the update (Eq. 3, token mean)."""
    loss_tokens: int = 0
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
        out: dict[str, Any] = {"loss": self.loss, "loss_tokens": self.loss_tokens, "grad_norm": self.grad_norm}
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


@dataclass(frozen=True)
class ItemSettings:
    """How a step's samples and contexts become update items (built from the run's config)."""

    template: str = "resd"
    """The teacher-prompt template the contexts are rendered with."""
    max_teacher_prompt_length: int = 4096
    """Teacher prompts are fitted to this many tokens (longest slot shortened first)."""
    rebalance: tuple[float, float] | None = None
    """(a, b) of the success-rate weights (App. B Eq. 2); None = every weight 1."""
    advantages: bool = False
    """Every sample carries its group-relative advantage (GRPO; dGRPO-style with pg_coef > 0)."""
    advantage_scale: Literal["none", "group"] = "none"
    """Divide advantages by the group's std ("group") or not (Dr. GRPO, "none")."""


@dataclass
class UpdateBatch:
    """What one policy update consumes: the items, the batch's sampled response tokens (the
    denominator of the "sampled" token mean, see `LossSettings.token_mean`) and the metrics
    describing how the items were made."""

    items: list[UpdateItem]
    response_tokens: int
    stats: dict[str, Any]


def group_advantages_of(samples: Sequence[Sample], scale: Literal["none", "group"]) -> list[float]:
    """A_i of every sample (in sample order), each group's rewards centred on its own mean."""
    by_index: dict[int, float] = {}
    for group in groups_of(samples):
        for s, a in zip(group.samples, group_advantages(group.rewards, len(group.samples), scale=scale).tolist()):
            by_index[s.index] = a
    return [by_index[s.index] for s in samples]


def update_items(samples: Sequence[Sample], contexts: Sequence[Any] | None, settings: ItemSettings,
                 tokenizer: Any) -> UpdateBatch:
    """The one place a step's samples become update items (paper Alg. 1 lines 15-16).

    With `contexts` (a `TeacherContext` per sample: self-distillation) each distilled sample with a
    response gets its teacher prompt (rendered from its context, fitted to the budget), its weight
    (App. B) and the mask from the context's first distilled token; with `settings.advantages` the
    other samples join with their advantage and no distilled token. Without contexts (GRPO) every
    sample with a non-zero advantage is an item. Items carry their sample's index."""
    response_tokens = sum(len(s.completion_ids) for s in samples)
    advantages = group_advantages_of(samples, settings.advantage_scale) if settings.advantages else None
    stats: dict[str, Any] = {}
    if contexts is None:
        if advantages is None:
            raise ValueError("an update without a teacher needs advantages")
        items = [UpdateItem(s.prompt_ids, s.completion_ids, [1.0] * len(s.completion_ids), advantage=float(a),
                            succeeded=s.succeeded, sample=s.index)
                 for s, a in zip(samples, advantages, strict=True) if s.completion_ids and a != 0.0]
        taught = len(items)
    else:
        items, stats = _distillation_items(samples, contexts, settings, tokenizer)
        taught = len(items)
        if advantages is not None:
            items = _with_advantages(items, samples, advantages)
    stats = {"signal_samples": taught, "signal_fraction": taught / max(1, len(samples)), **stats}
    if advantages is not None:
        stats["advantage_abs_mean"] = float(np.mean(np.abs(advantages))) if advantages else 0.0
    return UpdateBatch(items, response_tokens, stats)


def _distillation_items(samples: Sequence[Sample], contexts: Sequence[Any], settings: ItemSettings, tokenizer: Any
                        ) -> tuple[list[UpdateItem], dict[str, Any]]:
    weights = (success_rate_weights([s.succeeded for s in samples], *settings.rebalance).tolist()
               if settings.rebalance is not None else [1.0] * len(samples))
    items, lengths, truncated = [], [], 0
    for s, c, w in zip(samples, contexts, weights, strict=True):
        if not (c.distill and s.completion_ids):
            continue
        ids, fit = fit_teacher_prompt(tokenizer, teacher_messages(settings.template, s.task.prompt, c),
                                      settings.max_teacher_prompt_length)
        truncated += int(fit.get("teacher/truncated", 0))
        lengths.append(len(ids))
        mask = [float(m) for m in error_suffix_mask(len(s.completion_ids), c.distill_from)]
        items.append(UpdateItem(s.prompt_ids, s.completion_ids, mask, weight=float(w), teacher_prompt_ids=list(ids),
                                succeeded=s.succeeded, sample=s.index))
    stats = {**teacher_stats(contexts), "teacher/truncated": truncated,
             "teacher/prompt_tokens_mean": float(np.mean(lengths)) if lengths else 0.0}
    return items, stats


def _with_advantages(items: list[UpdateItem], samples: Sequence[Sample], advantages: Sequence[float]
                     ) -> list[UpdateItem]:
    """dGRPO-style: every sample also carries its group advantage. Distilled items keep their
    teacher and mask; the other samples join with no distilled token (their teacher prompt is the
    student's own, masked out) when their advantage is not 0. Items are matched to samples by
    index: two identical answers to one prompt are two samples, each with its own term."""
    by_index = {it.sample: it for it in items}
    out = []
    for s, a in zip(samples, advantages, strict=True):
        if not s.completion_ids:
            continue
        item = by_index.get(s.index)
        if item is not None:
            out.append(replace(item, advantage=float(a)))
        elif a != 0.0:
            out.append(UpdateItem(s.prompt_ids, s.completion_ids, [0.0] * len(s.completion_ids),
                                  teacher_prompt_ids=list(s.prompt_ids), advantage=float(a),
                                  succeeded=s.succeeded, sample=s.index))
    return out


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

    def apply(self, items: list[UpdateItem], response_tokens: int | None = None) -> UpdateResult:
        """Take one optimiser step on `items` (the same list on every rank). The token mean's
        denominator is the loss settings' `token_mean`: the items' masked tokens ("distilled"), or
        `response_tokens`, every sampled response token of the batch, including those of samples
        whose zero advantage left them out of the items ("sampled"; default: the items' own)."""
        if self.loss.token_mean == "distilled":
            n_tokens = int(sum(sum(it.mask) for it in items))
        else:
            n_tokens = response_tokens if response_tokens is not None else sum(len(it.mask) for it in items)
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
        return UpdateResult(loss=total / n_tokens, loss_tokens=n_tokens, updated=True, grad_norm=grad_norm,
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
        if self.teacher is not None:  # on padding chunks too: a sharded teacher's forward is a collective
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
