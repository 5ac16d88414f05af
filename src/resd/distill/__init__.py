"""Distillation math: losses and token masks. Pure tensor/string functions, no model, no I/O.

See :mod:`resd.distill.losses` for the loss conventions (shapes, aggregation, KL directions) and
:mod:`resd.distill.masks` for ROSD's first-error masks.
"""

from resd.distill.losses import (
    clamp_teacher_logprobs,
    group_advantages,
    importance_weights,
    policy_gradient_loss,
    self_distillation_loss,
    sequence_logprobs,
    success_rate_weights,
    token_level_distillation_loss,
    weighted_token_mean,
)
from resd.distill.masks import (
    char_to_token_index,
    error_suffix_mask,
    error_suffix_mask_tensor,
    find_error_span,
    locate_error_token,
    response_mask,
)

__all__ = [
    "char_to_token_index",
    "clamp_teacher_logprobs",
    "error_suffix_mask",
    "error_suffix_mask_tensor",
    "find_error_span",
    "group_advantages",
    "importance_weights",
    "locate_error_token",
    "policy_gradient_loss",
    "response_mask",
    "self_distillation_loss",
    "sequence_logprobs",
    "success_rate_weights",
    "token_level_distillation_loss",
    "weighted_token_mean",
]
