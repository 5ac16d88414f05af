"""Method presets: the few settings that tell RESD, SDPO, SDPO+ss, ROSD and GRPO apart.

Everything else (task, model, data stream, K, learning rate, loss shape) is shared, so runs of
different methods on the same config are a fair comparison (paper §4.1, App. G). A YAML file or a
`key=value` override still wins over these values. The list of methods is the list of presets.
"""

from __future__ import annotations

import copy
from typing import Any

# SDPO (arXiv 2601.20802, official defaults): groups of 8, a successful peer as the
# demonstration (never the sample's own), the feedback only when no peer succeeded, eta=0.05.
_SDPO: dict[str, Any] = {
    "num_generations": 8,
    "teacher_update_rate": 0.05,
    "template": "sdpo",
    "teacher_slots": {"previous_trial": False},
    "dont_reprompt_on_self_success": True,
    "environment_feedback_only_without_solution": True,
}

PRESETS: dict[str, dict[str, Any]] = {
    # RESD (paper §3.3, App. G): one rollout per prompt, a slow EMA teacher, and the context engine
    # (reflection, curated playbook, solution buffer) feeding the teacher prompt. Successes are
    # distilled too (their teacher sees the buffered solution), which is what App. B reweights.
    "resd": {
        "num_generations": 1,
        "teacher_update_rate": 1e-4,
        "template": "resd",
        "teacher_slots": {"previous_trial": True},
        "dont_reprompt_on_self_success": False,
        "environment_feedback_only_without_solution": False,
    },
    "sdpo": _SDPO,
    # SDPO+ss: SDPO that also distils a sample on its own success (the only difference).
    "sdpo_ss": {**_SDPO, "dont_reprompt_on_self_success": False},
    # ROSD (arXiv 2605.28014): a frozen initial-model teacher (eta=0), a greedy reflector that
    # quotes the first error of a failed sample against a successful peer; distillation runs from
    # that token to the end and the reflector's explanation goes into the teacher prompt.
    "rosd": {
        "num_generations": 8,
        "teacher_update_rate": 0.0,
        "template": "rosd",
        "teacher_slots": {"previous_trial": False, "feedback": False},
        "dont_reprompt_on_self_success": True,
        "environment_feedback_only_without_solution": True,
        "context": {"reflection_max_new_tokens": 256},
    },
    # GRPO (paper App. G baseline): groups of 8, same lr, batch and K; no distillation, no
    # context, no EMA teacher.
    "grpo": {
        "num_generations": 8,
        "teacher_update_rate": 0.0,
    },
}

METHODS: tuple[str, ...] = tuple(PRESETS)
"""Every training method, in the order commands list them."""

METHOD_NAMES: dict[str, str] = {"resd": "RESD", "sdpo": "SDPO", "sdpo_ss": "SDPO+ss", "rosd": "ROSD", "grpo": "GRPO"}
"""Display names as in the paper's tables."""

CONTEXT_ENGINES: dict[str, str | None] = {"resd": "resd", "sdpo": "peers", "sdpo_ss": "peers", "rosd": "rosd",
                                          "grpo": None}
"""Who builds each method's teacher context (`resd.context.engine`): RESD's playbook engine, SDPO's
peers, ROSD's first-error reflector; GRPO has no teacher."""

ABLATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "no_reflection": ("w/o reflection", {"teacher_slots": {"reflection": False}}),
    "no_playbook": ("w/o playbook", {"teacher_slots": {"playbook": False}}),
    "no_solution_buffer": ("w/o solution buffer", {"teacher_slots": {"solution": False}}),
}
"""RESD's teacher-prompt ablations (paper Table 3): name -> (row label, config values)."""


def method_defaults(method: str) -> dict[str, Any]:
    """The preset for `method` as a plain dict (a fresh copy, safe to merge into)."""
    if method not in PRESETS:
        from resd.errors import UserError

        raise UserError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return {"method": method, **copy.deepcopy(PRESETS[method])}


def ablations_of(config: dict[str, Any]) -> list[str]:
    """Names of the ABLATIONS a saved config (RUN/config.yaml as a dict) has switched on."""
    from resd.train.config import migrate_deprecated  # a config saved by an older resd names old keys

    config = migrate_deprecated(config)
    def off(values: dict[str, Any], node: dict[str, Any]) -> bool:
        return all(isinstance(node.get(k), dict) and off(v, node[k]) if isinstance(v, dict) else node.get(k) is v
                   for k, v in values.items())

    return [name for name, (_, values) in ABLATIONS.items() if off(values, config) or config.get(name) is True]
