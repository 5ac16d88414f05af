"""Per-token losses of self-distillation and of the GRPO baseline: pure tensor math, no model, no I/O.

    per_token_loss(settings, student_logits, completion_ids, mask, teacher_logits=..., advantages=...)

is the one dispatch the trainer calls; it returns ``[B, T]`` per-token losses, zero outside the
mask. The reduction is not here: the trainer's update (`resd.policy.update`) reduces them in one
visible line, the token-mean form of the paper's Eq. 3 (App. B),

    loss = sum_i w_i sum_t m_it l_it / (masked tokens of the whole update)

where the paper writes a per-sequence sum averaged over samples; like SDPO's and TRL's code we
take the mean over distilled tokens, so long responses do not dominate the gradient.

Conventions shared by every function here:

* Shapes: logits ``[B, T, V]``, per-token tensors and masks ``[B, T]``, per-sample weights ``[B]``.
  Position ``t`` of the logits is the distribution for response token ``t``: the caller slices
  the response positions and does the one-step shift before calling.
* Gradients reach the student only. Teacher logits / log-probs are detached inside.
* Math runs in float32 (float64 inputs stay float64), so bf16 / fp16 logits are safe.
* An all-zero mask gives a per-token loss of exactly 0 that still has a graph.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from resd.errors import UserError

__all__ = [
    "LossSettings",
    "per_token_loss",
    "divergence_per_token",
    "sampled_token_per_token",
    "policy_gradient_per_token",
    "success_rate_weights",
    "sequence_logprobs",
    "group_advantages",
    "clamp_teacher_logprobs",
    "shape_teacher_logits",
    "outcome_gate",
]

# Log-probabilities are floored here before any divergence arithmetic. exp(-1e4) is exactly 0 in
# float32 and float64, so the floor changes no probability, but it turns -inf (masked vocabulary
# entries, tokens outside the teacher's support) into a finite number: 0 * (-inf - -inf) would be
# NaN in the forward pass and inf * 0 NaN in the backward pass. Entries at the floor get zero
# gradient, which is their true gradient (their probability is 0).
_LOG_FLOOR = -1.0e4

# Largest log-mass the top-k support may claim when the tail bucket is formed (reference
# implementations use the same bound): keeps log(1 - sum p) finite when top-k covers everything.
_TAIL_LOGMASS_MAX = -1.0e-7


def _math_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half/bf16/float32 inputs, float64 kept (precise tests)."""
    return torch.promote_types(dtype, torch.float32)


def _check_same_batch(name: str, tensor: torch.Tensor, shape: torch.Size) -> None:
    if tuple(tensor.shape) != tuple(shape):
        raise UserError(
            f"{name} has shape {tuple(tensor.shape)} but must be {tuple(shape)} "
            "(batch, response tokens); slice both to the response positions first"
        )


def _log_tail(topk_logp: torch.Tensor) -> torch.Tensor:
    """log(1 - sum_k p_k) over the last dim, computed stably as log(-expm1(logsumexp(log p)))."""
    log_mass = torch.logsumexp(topk_logp, dim=-1, keepdim=True).clamp(max=_TAIL_LOGMASS_MAX)
    return torch.log(-torch.expm1(log_mass))


def _kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_v p_v (log p_v - log q_v), summed over the last dim (inputs floored)."""
    return (logp.exp() * (logp - logq)).sum(dim=-1)


def _divergence(student_logp: torch.Tensor, teacher_logp: torch.Tensor, alpha: float) -> torch.Tensor:
    """Per-token divergence on the distilled support (paper Eq. 1, App. A).

    alpha = 0: forward KL(teacher || student); alpha = 1: reverse KL(student || teacher);
    otherwise the generalised JSD with mixture m = (1-alpha) p_s + alpha p_t (formed in log
    space) and D = (1-alpha) KL(p_s || m) + alpha KL(p_t || m). Limits: D / alpha -> forward KL
    as alpha -> 0 and D / (1-alpha) -> reverse KL as alpha -> 1, so the endpoints are the
    continuous extensions of the JSD family up to that scale.
    """
    if alpha == 0.0:
        return _kl(teacher_logp, student_logp)
    if alpha == 1.0:
        return _kl(student_logp, teacher_logp)
    mixture_logp = torch.logsumexp(
        torch.stack([student_logp + math.log1p(-alpha), teacher_logp + math.log(alpha)]), dim=0
    )
    return (1.0 - alpha) * _kl(student_logp, mixture_logp) + alpha * _kl(teacher_logp, mixture_logp)


def _support_logprobs(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    topk: int | None,
    add_tail: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Student and teacher log-probs on the distilled support, ``[B, T, S]``.

    Full vocabulary: one log_softmax per tensor. Top-k: the student's k most likely tokens
    (teacher evaluated on the same indices), true log-probs ``logit - logsumexp(all logits)``,
    then either a tail bucket log(1 - sum p) appended to both (k+1 outcomes) or both
    renormalised over the k tokens. Only ``[B, T, k]`` tensors are materialised besides the
    logits themselves.
    """
    dtype = _math_dtype(student_logits.dtype)
    vocab = student_logits.shape[-1]
    with torch.no_grad():
        teacher = teacher_logits.detach().to(device=student_logits.device, dtype=dtype)
    student = student_logits.to(dtype)

    if topk is None or topk >= vocab:
        student_logp = F.log_softmax(student, dim=-1)
        with torch.no_grad():
            teacher_logp = F.log_softmax(teacher, dim=-1)
        return student_logp.clamp(min=_LOG_FLOOR), teacher_logp.clamp(min=_LOG_FLOOR)

    indices = torch.topk(student.detach(), topk, dim=-1).indices
    student_logp = student.gather(-1, indices) - torch.logsumexp(student, dim=-1, keepdim=True)
    with torch.no_grad():
        teacher_logp = teacher.gather(-1, indices) - torch.logsumexp(teacher, dim=-1, keepdim=True)
    # -inf entries (masked vocabulary) are fine in logsumexp; the floor comes once, at the end.
    if add_tail:
        student_logp = torch.cat([student_logp, _log_tail(student_logp)], dim=-1)
        with torch.no_grad():
            teacher_logp = torch.cat([teacher_logp, _log_tail(teacher_logp)], dim=-1)
    else:
        student_logp = student_logp - torch.logsumexp(student_logp, dim=-1, keepdim=True)
        with torch.no_grad():
            teacher_logp = teacher_logp - torch.logsumexp(teacher_logp, dim=-1, keepdim=True)
    return student_logp.clamp(min=_LOG_FLOOR), teacher_logp.clamp(min=_LOG_FLOOR)


def clamp_teacher_logprobs(
    teacher_logp: torch.Tensor,
    student_logp: torch.Tensor,
    *,
    ratio_min: float | None = 0.2,
    ratio_max: float | None = None,
) -> torch.Tensor:
    """Ratio clipping of paper §2 (tau = p_teacher / p_student clipped to [eps_min, eps_max]).

    Element-wise on the distilled support: ``log p_t >= log p_s.detach() + log ratio_min`` and,
    when ``ratio_max`` is set, ``log p_t <= log p_s.detach() + log ratio_max`` (paper §2). The
    result is NOT renormalised. The returned tensor carries no gradient.
    """
    with torch.no_grad():
        bound_base = student_logp.detach()
        clamped = teacher_logp.detach()
        if ratio_min is not None:
            clamped = torch.maximum(clamped, bound_base + math.log(ratio_min))
        if ratio_max is not None:
            clamped = torch.minimum(clamped, bound_base + math.log(ratio_max))
    return clamped


def _validate_sd_args(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    alpha: float,
    topk: int | None,
    ratio_min: float | None,
    ratio_max: float | None,
) -> None:
    if student_logits.dim() != 3:
        raise UserError(
            f"student_logits must be [batch, tokens, vocab], got shape {tuple(student_logits.shape)}"
        )
    if teacher_logits.shape != student_logits.shape:
        raise UserError(
            f"teacher logits {tuple(teacher_logits.shape)} and student logits "
            f"{tuple(student_logits.shape)} differ; both must cover the same response tokens "
            "with the same vocabulary"
        )
    _check_same_batch("mask", mask, student_logits.shape[:2])
    if not 0.0 <= alpha <= 1.0:
        raise UserError(f"alpha={alpha} is outside [0, 1]: 0 = forward KL, 1 = reverse KL, between = JSD")
    if topk is not None and (isinstance(topk, bool) or not isinstance(topk, int) or topk < 1):
        raise UserError(f"topk={topk!r} must be a positive integer, or None for the full vocabulary")
    if ratio_min is not None and ratio_min <= 0:
        raise UserError(f"ratio_min={ratio_min} must be > 0 (paper default 0.2), or None for no lower clip")
    if ratio_max is not None:
        if ratio_max <= 0:
            raise UserError(f"ratio_max={ratio_max} must be > 0 (Manufactoria uses 5), or None for no upper clip")
        if ratio_min is not None and ratio_max < ratio_min:
            raise UserError(f"ratio_max={ratio_max} is below ratio_min={ratio_min}; use ratio_max >= ratio_min")


def divergence_per_token(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    *,
    alpha: float,
    topk: int | None = 100,
    add_tail: bool = True,
    ratio_min: float | None = 0.2,
    ratio_max: float | None = None,
) -> torch.Tensor:
    """Logit-level self-distillation, per token (paper Eq. 1 with the ratio clip of §2).

    Args:
        student_logits: ``[B, T, V]`` student logits at the response positions (grad flows here).
        teacher_logits: ``[B, T, V]`` teacher logits on the same response tokens (detached).
        mask: ``[B, T]`` 1 for distilled tokens (response tokens of distilled samples, times any
            ROSD error-suffix mask), 0 for padding / skipped samples.
        alpha: 0 = forward KL(teacher || student), 1 = reverse KL(student || teacher),
            otherwise generalised JSD with mixture weight alpha on the teacher (App. A).
        topk: distil on the student's top-k tokens (paper: 100); None or >= V = full vocabulary.
        add_tail: with top-k, add the bucket log(1 - sum_topk p) to both distributions; False
            renormalises both over the k tokens instead.
        ratio_min: lower clip eps_min on p_t / p_s (paper 0.2); None disables it.
        ratio_max: upper clip eps_max (paper: none; Manufactoria 5); None disables it.

    Returns the ``[B, T]`` divergence, zero outside the mask.
    """
    _validate_sd_args(student_logits, teacher_logits, mask, alpha, topk, ratio_min, ratio_max)
    student_logp, teacher_logp = _support_logprobs(student_logits, teacher_logits, topk, add_tail)
    teacher_logp = clamp_teacher_logprobs(teacher_logp, student_logp, ratio_min=ratio_min, ratio_max=ratio_max)
    divergence = _divergence(student_logp, teacher_logp, float(alpha))
    return divergence * mask.to(device=divergence.device, dtype=divergence.dtype)


def sampled_token_per_token(student_logp: torch.Tensor, teacher_logp: torch.Tensor, mask: torch.Tensor
                            ) -> torch.Tensor:
    """Sampled-token reverse-KL self-distillation, per token (the "token-level" mode of SDPO).

    ``l_t = (log p_s(y_t) - log p_t(y_t)).detach() * log p_s(y_t)``: its gradient
    ``(log p_s - log p_t) * grad log p_s`` is the score-function (REINFORCE) estimator of the
    gradient of KL(p_s || p_t) on tokens sampled from the student. Inputs are ``[B, T]``
    log-probs of the sampled tokens (see :func:`sequence_logprobs`); the teacher is detached.
    The value itself is a surrogate, not a divergence. Zero outside the mask.
    """
    _check_same_batch("teacher_logp", teacher_logp, student_logp.shape)
    _check_same_batch("mask", mask, student_logp.shape)
    dtype = _math_dtype(student_logp.dtype)
    s = student_logp.to(dtype)
    t = teacher_logp.detach().to(dtype)
    m = mask.to(dtype)
    # Tokens outside the mask may carry -inf (padding); keep them out of the arithmetic entirely.
    s_safe = torch.where(m > 0, s, torch.zeros_like(s))
    t_safe = torch.where(m > 0, t, torch.zeros_like(t))
    advantage = (s_safe - t_safe).detach().clamp(min=_LOG_FLOOR, max=-_LOG_FLOOR)
    return advantage * s_safe * m


def success_rate_weights(
    succeeded: torch.Tensor | Sequence[bool],
    a: float = 1.0,
    b: float = 1.0,
) -> torch.Tensor:
    """Success-rate rebalancing weights (paper App. B, Eq. 2).

    With s the fraction of samples that succeeded (`resd.rollout.Sample.succeeded`): successes get
    ``(1 - s)**a``, failures ``s**b``, then all weights are scaled to batch mean 1. When s is 0
    or 1 every weight is 1 (rebalancing would otherwise zero the only signal). Returns a float32
    tensor ``[B]`` (empty in, empty out).
    """
    if a < 0 or b < 0:
        raise UserError(f"rebalancing exponents a={a}, b={b} must be >= 0 (paper: a = b = 1)")
    success = torch.as_tensor(succeeded, dtype=torch.bool).detach().reshape(-1)
    if success.numel() == 0:
        return torch.ones(0, dtype=torch.float32)
    r = success.double()
    s = r.mean().item()
    if s == 0.0 or s == 1.0:
        return torch.ones(r.numel(), dtype=torch.float32)
    raw = torch.where(success, torch.full_like(r, (1.0 - s) ** a), torch.full_like(r, s**b))
    return (raw / raw.mean()).to(torch.float32)


def sequence_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Per-token log-probabilities ``log p(ids[b, t] | logits[b, t])``, ``[B, T]``.

    ``logits[:, t]`` must already be the distribution for ``ids[:, t]`` (the caller shifts).
    Computed as ``gather(logits) - logsumexp(logits)`` in float32 so no ``[B, T, V]``
    log-softmax is materialised. Gradient flows into ``logits``.
    """
    if logits.dim() != 3:
        raise UserError(f"logits must be [batch, tokens, vocab], got shape {tuple(logits.shape)}")
    _check_same_batch("ids", ids, logits.shape[:2])
    x = logits.to(_math_dtype(logits.dtype))
    picked = x.gather(-1, ids.long().unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(x, dim=-1)


def group_advantages(
    rewards: torch.Tensor | Sequence[float],
    group_size: int,
    scale: Literal["none", "group"] = "none",
    eps: float = 1e-6,
) -> torch.Tensor:
    """GRPO group-relative advantages (the paper's GRPO baseline, App. G; Dr. GRPO default).

    ``rewards`` are laid out as consecutive groups of ``group_size`` samples of the same
    prompt. ``A_i = r_i - mean(group)``; with ``scale="group"`` additionally divided by the
    group's standard deviation + eps (original GRPO). Default "none": no std scaling, as in
    the reference GRPO baseline (``norm_adv_by_std False``). Returns float32 ``[B]``.
    """
    if group_size < 1:
        raise UserError(f"group_size={group_size} must be >= 1")
    if scale not in ("none", "group"):
        raise UserError(f"advantage scale={scale!r} must be 'none' (Dr.GRPO) or 'group' (divide by group std)")
    r = torch.as_tensor(rewards, dtype=torch.float32).detach().reshape(-1)
    if r.numel() % group_size != 0:
        raise UserError(
            f"{r.numel()} rewards do not split into groups of {group_size}; "
            "pass all samples of each prompt consecutively"
        )
    groups = r.view(-1, group_size)
    advantages = groups - groups.mean(dim=1, keepdim=True)
    if scale == "group":
        std = groups.std(dim=1, unbiased=False, keepdim=True) if group_size > 1 else torch.zeros_like(groups[:, :1])
        advantages = advantages / (std + eps)
    return advantages.reshape(-1)


def policy_gradient_per_token(logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The on-policy policy gradient of the GRPO baseline, per token: ``-ratio * A`` with
    ``ratio = exp(logp - logp.detach())``, zero outside the mask.

    The ratio's value is 1 and its gradient is ``grad log p``, so the gradient is REINFORCE's
    ``-A grad log p``. No PPO/DAPO clip: every inner iteration re-generates before its one
    optimiser step, so the samples always come from the current policy and the ratio never leaves
    1 (nanochat's `chat_rl` drops the clip for the same reason); a clip range would change
    nothing. ``advantages`` is ``[B]`` (one per sample, broadcast over tokens) or ``[B, T]``.
    """
    _check_same_batch("mask", mask, logp.shape)
    dtype = _math_dtype(logp.dtype)
    m = mask.to(dtype)
    adv = advantages.detach().to(dtype=dtype, device=logp.device)
    if adv.dim() == 1:
        if adv.shape[0] != logp.shape[0]:
            raise UserError(f"advantages has {adv.shape[0]} entries but the batch has {logp.shape[0]} samples")
        adv = adv[:, None].expand_as(m)
    else:
        _check_same_batch("advantages", adv, logp.shape)
    # Padding may carry -inf log-probs: keep it out of the arithmetic.
    safe = torch.where(m > 0, logp.to(dtype), torch.zeros_like(m))
    ratio = torch.exp(safe - safe.detach())
    return -(ratio * adv) * m


LossMode = Literal["topk_logits", "full_logits", "sampled_token", "policy_gradient"]


@dataclass(frozen=True)
class LossSettings:
    """What `per_token_loss` computes; the trainer builds it from its config."""

    mode: LossMode = "topk_logits"
    """topk_logits / full_logits: divergence on the student's top-k (+ tail) or on the whole
    vocabulary; sampled_token: the score-function reverse KL; policy_gradient: GRPO."""
    alpha: float = 1.0
    """0 forward KL, 1 reverse KL (paper default), between: generalised JSD (App. A)."""
    topk: int = 100
    """k of the top-k support (paper: 100)."""
    add_tail: bool = True
    """Add the tail bucket log(1 - sum top-k p); False renormalises the top-k."""
    ratio_min: float | None = 0.2
    """eps_min of the ratio clip (paper: 0.2)."""
    ratio_max: float | None = None
    """eps_max of the ratio clip (paper: none; Manufactoria 5)."""
    pg_coef: float = 0.0
    """Distillation modes: weight of a GRPO term added per token (dGRPO-style); 0 = none."""
    token_mean: Literal["distilled", "sampled"] = "distilled"
    """The denominator of the token mean the update reduces per-token losses with (Eq. 3, as
    TRL's `aggregate_loss` names its reductions): "distilled" = the tokens the loss masks in
    (self-distillation); "sampled" = every sampled response token of the batch, including samples
    of zero advantage (GRPO and pg_coef > 0: DAPO's token-level mean, TRL loss_type="dapo")."""
    teacher_temperature: float = 1.0
    """Sharpened teacher: its logits are divided by this before any divergence (< 1 sharpens, 1 =
    the paper's teacher). Why: a teacher that ranks the accepted answer higher but is broader than
    the student pulls the student's mass into its tail (measured by
    benchmarks/distill_diagnosis.py); dividing by T < 1 keeps the teacher's ranking and drops its
    spread. The temperature-scaled target of knowledge distillation (Hinton, Vinyals & Dean 2015,
    §2), here below 1 to sharpen instead of soften."""
    teacher_topk: int | None = None
    """Top-k renormalised teacher: only the teacher's k most likely tokens keep probability,
    renormalised over them (top-k filtering as in Fan et al. 2018, §5.4, applied to the target);
    the ratio clip (`ratio_min`) still bounds how hard a token outside them is pushed down.
    None = the whole teacher distribution (the paper)."""
    teacher_entropy_cap: bool = False
    """Entropy-capped teacher: at each token where the teacher is broader than the student (higher
    entropy), its logits are divided by the largest temperature <= 1 that brings its entropy down
    to the student's (bisection, `cap_teacher_entropy`); elsewhere it is the paper's teacher. Why:
    the diagnosis found the teacher broader than the student on most tokens, so distilling spreads
    the student (SDPO on the default model), while a fixed T = 0.5 also sharpens where the teacher
    was not broader and collapsed the student on one seed of three; the cap keeps the teacher's
    ranking and never asks the student to be broader than it is, nor sharper than the teacher."""
    token_gate: bool = False
    """Token-level gating: distil a response token only where the teacher moves its probability
    the way the sample's outcome says, log p_t(y_t) > log p_s(y_t) on an accepted sample and < on a
    rejected one (the sign of the paper's §3.1 teacher advantage; the other tokens are where the
    teacher disagrees with the environment). Gated tokens still count in the update's token mean,
    so a mostly-gated update is a small one."""
    distill_outcomes: Literal["all", "failures"] = "all"
    """Which samples are distilled: "all" (the paper) or "failures" only (rejected samples; an
    accepted sample's teacher can only copy what the student already did, so it has least to add
    and most room to spread mass). Counted in the token mean like `token_gate`."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.teacher_temperature) and self.teacher_temperature > 0):
            raise UserError(f"teacher_temperature={self.teacher_temperature} must be a finite number > 0 "
                            "(1 = the paper's teacher, < 1 sharpens)")
        if self.teacher_topk is not None and (isinstance(self.teacher_topk, bool)
                                              or not isinstance(self.teacher_topk, int) or self.teacher_topk < 1):
            raise UserError(f"teacher_topk={self.teacher_topk!r} must be a positive integer or None (whole distribution)")
        if self.teacher_topk is not None and self.mode == "sampled_token":
            raise UserError("teacher_topk needs a logit-level mode (topk_logits or full_logits): with sampled_token "
                            "a sampled token outside the teacher's k would get log-probability -inf")
        if self.distill_outcomes not in ("all", "failures"):
            raise UserError(f"distill_outcomes={self.distill_outcomes!r} must be 'all' or 'failures'")

    @property
    def needs_outcomes(self) -> bool:
        """Whether the loss reads each sample's outcome (gating, failures only)."""
        return self.token_gate or self.distill_outcomes == "failures"


def shape_teacher_logits(teacher_logits: torch.Tensor, *, temperature: float = 1.0, topk: int | None = None
                         ) -> torch.Tensor:
    """The distillation target: teacher logits divided by `temperature`, and with `topk` every
    token outside the teacher's k most likely set to -inf (its softmax is then the top-k
    renormalised). Detached; unchanged at temperature 1 and topk None."""
    shaped = teacher_logits.detach()
    if temperature != 1.0:
        shaped = shaped.to(_math_dtype(shaped.dtype)) / temperature
    if topk is not None and topk < shaped.shape[-1]:
        kth = torch.topk(shaped, topk, dim=-1).values[..., -1:]
        shaped = shaped.masked_fill(shaped < kth, float("-inf"))
    return shaped


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    log_p = torch.log_softmax(logits, -1)
    return -(log_p.exp() * log_p).sum(-1)


def cap_teacher_entropy(teacher_logits: torch.Tensor, student_logits: torch.Tensor, *, floor: float = 0.05,
                        iterations: int = 12) -> torch.Tensor:
    """Teacher logits divided, token by token, by the largest T in [floor, 1] whose softmax has an
    entropy no higher than the student's at that token (unchanged where the teacher is not
    broader). The entropy of softmax(z / T) rises with T, so bisection finds it; `iterations`
    halvings of [floor, 1] leave T within 1e-3 (12) of the exact one, on the sharper side. Detached."""
    dtype = _math_dtype(teacher_logits.dtype)
    z = teacher_logits.detach().to(dtype)
    target = _entropy(student_logits.detach().to(dtype))
    broader = _entropy(z) > target
    lo = torch.full_like(target, floor)
    hi = torch.ones_like(target)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        too_broad = _entropy(z / mid[..., None]) > target
        hi = torch.where(too_broad, mid, hi)
        lo = torch.where(too_broad, lo, mid)
    temperature = torch.where(broader, lo, torch.ones_like(lo))
    return z / temperature[..., None]


def outcome_gate(student_token_logp: torch.Tensor, teacher_token_logp: torch.Tensor, succeeded: torch.Tensor,
                 *, token_gate: bool, failures_only: bool) -> torch.Tensor:
    """``[B, T]`` 0/1 mask of the tokens to distil given each sample's outcome (``succeeded``
    ``[B]`` bool): with `failures_only` the accepted samples' rows are 0; with `token_gate` a token
    is kept only where sign(log p_t(y_t) - log p_s(y_t)) is + on accepted and - on rejected samples."""
    _check_same_batch("teacher_token_logp", teacher_token_logp, student_token_logp.shape)
    ok = succeeded.to(device=student_token_logp.device, dtype=torch.bool).reshape(-1)
    if ok.shape[0] != student_token_logp.shape[0]:
        raise UserError(f"succeeded has {ok.shape[0]} entries but the batch has {student_token_logp.shape[0]} samples")
    keep = torch.ones_like(student_token_logp, dtype=torch.bool)
    if failures_only:
        keep &= ~ok[:, None]
    if token_gate:
        moves_up = teacher_token_logp.detach() > student_token_logp.detach()
        moves_down = teacher_token_logp.detach() < student_token_logp.detach()
        keep &= torch.where(ok[:, None], moves_up, moves_down)
    return keep.to(_math_dtype(student_token_logp.dtype))


def per_token_loss(
    settings: LossSettings,
    student_logits: torch.Tensor,
    completion_ids: torch.Tensor,
    mask: torch.Tensor,
    *,
    teacher_logits: torch.Tensor | None = None,
    advantages: torch.Tensor | None = None,
    pg_mask: torch.Tensor | None = None,
    succeeded: torch.Tensor | None = None,
) -> torch.Tensor:
    """The ``[B, T]`` per-token loss of one micro-batch for `settings.mode` (zero outside the masks).

    Distillation modes need `teacher_logits` (the teacher's logits on the same response tokens);
    policy_gradient needs `advantages` ``[B]``. Updates are on-policy (each inner iteration
    re-generates before its one optimiser step), so the policy-gradient ratio is taken against the
    detached current log-probs and equals 1 at the step. With `settings.pg_coef` > 0 a distillation
    mode adds `pg_coef` times the policy-gradient term on `pg_mask` (the whole response; `mask`
    then only marks the distilled tokens). The teacher is shaped first (`teacher_temperature`,
    `teacher_topk`, then `teacher_entropy_cap`); `token_gate` and `distill_outcomes` need `succeeded` ``[B]`` (the
    environment accepted the sample) and narrow `mask` for the distillation term only.
    """
    mode = settings.mode

    def policy_gradient(on: torch.Tensor) -> torch.Tensor:
        if advantages is None:
            raise UserError("the policy-gradient loss needs one advantage per sample")
        logp = sequence_logprobs(student_logits, completion_ids)
        return policy_gradient_per_token(logp, advantages, on)

    if mode == "policy_gradient":
        return policy_gradient(mask)
    if teacher_logits is None:
        raise UserError(f"distillation_mode={mode!r} needs the teacher's logits")
    teacher_logits = shape_teacher_logits(teacher_logits, temperature=settings.teacher_temperature,
                                          topk=settings.teacher_topk)
    if settings.teacher_entropy_cap:
        teacher_logits = cap_teacher_entropy(teacher_logits, student_logits)
    if settings.needs_outcomes:
        if succeeded is None:
            raise UserError("token_gate / distill_outcomes=failures need each sample's outcome (succeeded)")
        mask = mask * outcome_gate(sequence_logprobs(student_logits.detach(), completion_ids),
                                   sequence_logprobs(teacher_logits, completion_ids), succeeded,
                                   token_gate=settings.token_gate,
                                   failures_only=settings.distill_outcomes == "failures").to(mask.device)
    if mode == "sampled_token":
        distill = sampled_token_per_token(sequence_logprobs(student_logits, completion_ids),
                                          sequence_logprobs(teacher_logits, completion_ids), mask)
    elif mode in ("topk_logits", "full_logits"):
        distill = divergence_per_token(student_logits, teacher_logits, mask, alpha=settings.alpha,
                                       topk=settings.topk if mode == "topk_logits" else None,
                                       add_tail=settings.add_tail, ratio_min=settings.ratio_min,
                                       ratio_max=settings.ratio_max)
    else:
        raise UserError(f"unknown loss mode {mode!r}; choose topk_logits, full_logits, sampled_token or policy_gradient")
    if settings.pg_coef:
        return distill + settings.pg_coef * policy_gradient(pg_mask if pg_mask is not None else mask)
    return distill
