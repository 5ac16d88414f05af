"""What a teacher may see: playbook, reflector/curator, solution buffer, teacher prompts, and the
context engines that assemble them per method.

Framework-independent: it knows the environment's `Outcome` and a
`generate(prompts, max_new_tokens, temperature) -> list[str]` callable, nothing about training.
"""

from resd.context.buffer import SolutionBuffer
from resd.context.engine import (
    ContextEngine,
    ContextPolicy,
    ContextStep,
    FirstErrorContext,
    PeerContext,
    PlaybookContext,
    ScoredSample,
    TeacherContext,
    teacher_stats,
)
from resd.context.playbook import ConciseSchedule, Entry, Playbook
from resd.context.teacher_prompt import (
    SLOT_NAMES,
    TEMPLATE_NAMES,
    TeacherMessages,
    TeacherSlots,
    build_teacher_messages,
    fit_teacher_prompt,
    teacher_messages,
)
from resd.context.updater import ContextConfig, ContextSample, ContextUpdater, GenerateFn

__all__ = [
    "SLOT_NAMES",
    "TEMPLATE_NAMES",
    "ConciseSchedule",
    "ContextConfig",
    "ContextEngine",
    "ContextPolicy",
    "ContextSample",
    "ContextStep",
    "ContextUpdater",
    "Entry",
    "FirstErrorContext",
    "GenerateFn",
    "PeerContext",
    "Playbook",
    "PlaybookContext",
    "ScoredSample",
    "SolutionBuffer",
    "TeacherContext",
    "TeacherMessages",
    "TeacherSlots",
    "build_teacher_messages",
    "fit_teacher_prompt",
    "teacher_messages",
    "teacher_stats",
]
