"""The RESD context engine: playbook, reflector/curator, solution buffer and teacher prompts.

Framework-independent: it knows the environment's `Outcome` and a
`generate(prompts, max_new_tokens, temperature) -> list[str]` callable, nothing about training.
"""

from resd.context.buffer import SolutionBuffer
from resd.context.playbook import ConciseSchedule, Entry, Playbook
from resd.context.teacher_prompt import (
    TEMPLATE_NAMES,
    TeacherMessages,
    TeacherSlots,
    build_teacher_messages,
    fit_teacher_prompt,
    peer_solution,
)
from resd.context.updater import ContextConfig, ContextSample, ContextUpdater, GenerateFn

__all__ = [
    "ConciseSchedule",
    "ContextConfig",
    "ContextSample",
    "ContextUpdater",
    "Entry",
    "GenerateFn",
    "Playbook",
    "SolutionBuffer",
    "TEMPLATE_NAMES",
    "TeacherMessages",
    "TeacherSlots",
    "build_teacher_messages",
    "fit_teacher_prompt",
    "peer_solution",
]
