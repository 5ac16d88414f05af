"""Distillation math: per-token losses and token masks. Pure tensor/string functions, no model, no I/O.

See :mod:`resd.distill.losses` for the loss conventions (shapes, KL directions, the one dispatch)
and :mod:`resd.distill.masks` for ROSD's first-error masks.
"""

from resd.distill.losses import (
    LossSettings,
    clamp_teacher_logprobs,
    divergence_per_token,
    group_advantages,
    outcome_gate,
    per_token_loss,
    policy_gradient_per_token,
    sampled_token_per_token,
    sequence_logprobs,
    shape_teacher_logits,
    success_rate_weights,
)
from resd.distill.masks import char_to_token_index, error_suffix_mask, find_error_span, locate_error_token

__all__ = [
    "LossSettings",
    "char_to_token_index",
    "clamp_teacher_logprobs",
    "divergence_per_token",
    "error_suffix_mask",
    "find_error_span",
    "group_advantages",
    "locate_error_token",
    "outcome_gate",
    "per_token_loss",
    "policy_gradient_per_token",
    "sampled_token_per_token",
    "sequence_logprobs",
    "shape_teacher_logits",
    "success_rate_weights",
]
