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
)
from resd.context.playbook import ConciseSchedule, Entry, Playbook
from resd.context.slots import SLOT_NAMES, TeacherContext, TeacherSlots, teacher_stats
from resd.context.teacher_prompt import TeacherMessages, fit_teacher_prompt, teacher_messages
from resd.context.updater import ContextConfig, ContextUpdater, GenerateFn

__all__ = [
    "SLOT_NAMES",
    "ConciseSchedule",
    "ContextConfig",
    "ContextEngine",
    "ContextPolicy",
    "ContextStep",
    "ContextUpdater",
    "Entry",
    "FirstErrorContext",
    "GenerateFn",
    "PeerContext",
    "Playbook",
    "PlaybookContext",
    "SolutionBuffer",
    "TeacherContext",
    "TeacherMessages",
    "TeacherSlots",
    "fit_teacher_prompt",
    "teacher_messages",
    "teacher_stats",
]
