"""Method presets: the few settings that tell RESD, SDPO, SDPO+ss, ROSD and GRPO apart.

Everything else (task, model, data stream, K, learning rate, loss shape) is shared, so runs of
different methods on the same config are a fair comparison (paper §4.1, App. G). A YAML file or a
`key=value` override still wins over these values.
"""

from __future__ import annotations

from typing import Any

_PRESETS: dict[str, dict[str, Any]] = {
    # RESD (paper §3.3, App. G): one rollout per prompt, a slow EMA teacher, and the context engine
    # (reflection, curated playbook, solution buffer) feeding the teacher prompt. Successes are
    # distilled too (their teacher sees the buffered solution), which is what App. B reweights.
    "resd": {
        "num_generations": 1,
        "teacher_update_rate": 1e-4,
        "template": "resd",
        "use_context": True,
        "include_previous_trial": True,
        "include_environment_feedback": True,
        "dont_reprompt_on_self_success": False,
        "environment_feedback_only_without_solution": False,
        "error_suffix_mask": False,
    },
    # SDPO (arXiv 2601.20802, official defaults): groups of 8, a successful peer as the
    # demonstration (never the sample's own), the feedback only when no peer succeeded, eta=0.05.
    "sdpo": {
        "num_generations": 8,
        "teacher_update_rate": 0.05,
        "template": "sdpo",
        "use_context": False,
        "include_previous_trial": False,
        "include_environment_feedback": True,
        "use_peer_solution": True,
        "dont_reprompt_on_self_success": True,
        "environment_feedback_only_without_solution": True,
        "no_solution_buffer": True,
        "error_suffix_mask": False,
    },
    # ROSD (arXiv 2605.28014): a frozen initial-model teacher (eta=0), a greedy reflector that
    # quotes the first error of a failed sample against a successful peer; distillation runs from
    # that token to the end and the reflector's explanation goes into the teacher prompt.
    "rosd": {
        "num_generations": 8,
        "teacher_update_rate": 0.0,
        "template": "rosd",
        "use_context": False,
        "include_previous_trial": False,
        "include_environment_feedback": False,
        "use_peer_solution": True,
        "dont_reprompt_on_self_success": True,
        "environment_feedback_only_without_solution": True,
        "no_solution_buffer": True,
        "error_suffix_mask": True,
    },
    # GRPO (paper App. G baseline): groups of 8, same lr, batch and K; no distillation, no
    # context, no EMA teacher.
    "grpo": {
        "num_generations": 8,
        "teacher_update_rate": 0.0,
        "use_context": False,
        "error_suffix_mask": False,
    },
}

# SDPO+ss: SDPO that also distils a sample on its own success (the only difference).
_PRESETS["sdpo_ss"] = {**_PRESETS["sdpo"], "dont_reprompt_on_self_success": False}


def method_defaults(method: str) -> dict[str, Any]:
    """The preset for `method` as a plain dict (a fresh copy, safe to merge into)."""
    from resd.train.config import METHODS

    if method not in _PRESETS:
        from resd.errors import UserError

        raise UserError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return {"method": method, **_PRESETS[method]}
