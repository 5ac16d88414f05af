"""The teacher-prompt slots, declared once: the `str | None` fields of `TeacherContext` marked
with `slot(...)` (paper §3.3, Alg. 1 line 15). Everything else that names slots derives from them:

* `SLOT_NAMES`: the slots in declaration order (the order `resd probe` adds them in);
* `TeacherSlots`: one on/off switch per slot (the config's `teacher_slots`, paper Table 3);
* the teacher prompt fills a template part per slot (`teacher_prompt.teacher_messages`);
* the distillation rule (a sample is distilled only when a slot that `informs` has content);
* `teacher_stats`: the fraction of samples whose teacher read each informing slot.

A new slot is one field here and one `{name}` part in a template (templates/*.txt); the context
engine that knows its text writes it into its notes under that name (see docs/algorithm.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, Sequence


def slot(doc: str, *, informs: bool = True, strip_reasoning: bool = False) -> Any:
    """A teacher-prompt slot field (None = empty). `informs`: the teacher learns something the
    student did not know from it (the student's own previous trial does not). `strip_reasoning`:
    thinking blocks are removed before the teacher reads it (answers, not notes)."""
    return field(default=None, metadata={"slot": True, "doc": doc, "informs": informs,
                                         "strip_reasoning": strip_reasoning})


@dataclass(frozen=True)
class TeacherContext:
    """What one sample's teacher reads besides the task; None marks an empty slot.

    `distill` is False when the teacher would know nothing more than the student (the sample is
    then left out of the loss). `distill_from` is the first response token that is distilled
    (ROSD's first error; 0 = the whole response)."""

    distill: bool
    feedback: str | None = slot("The environment's feedback on the attempt.")
    previous_trial: str | None = slot("The student's own attempt (thinking stripped).", informs=False,
                                      strip_reasoning=True)
    reflection: str | None = slot("The reflector's diagnosis of the attempt (RESD) or its first-error "
                                  "explanation (ROSD).")
    playbook: str | None = slot("The curated playbook (RESD). Off: nothing is curated either (no one would read it).")
    solution: str | None = slot("A successful trial: a group peer's success or the buffered solution.",
                                strip_reasoning=True)
    solution_source: str = ""
    """"peer" (a successful response of the same group), "buffer" (an earlier success of this
    task, RESD's solution buffer) or "" (no solution shown)."""
    distill_from: int = 0

    def slot_values(self) -> dict[str, str | None]:
        """Slot name -> text, in `SLOT_NAMES` order."""
        return {name: getattr(self, name) for name in SLOT_NAMES}


SLOT_FIELDS: tuple[dataclasses.Field, ...] = tuple(f for f in fields(TeacherContext) if f.metadata.get("slot"))
SLOT_NAMES: tuple[str, ...] = tuple(f.name for f in SLOT_FIELDS)
"""Every teacher-prompt slot, in declaration order."""
INFORMING_SLOTS: tuple[str, ...] = tuple(f.name for f in SLOT_FIELDS if f.metadata["informs"])
"""Slots whose content tells the teacher something the student did not see."""

NOT_DISTILLED = TeacherContext(distill=False)


def _restricted_to(self: Any, template: str) -> Any:
    """These slots, less those the template has no place for."""
    from resd.context.teacher_prompt import TeacherTemplate

    tpl = TeacherTemplate.load(template)
    return TeacherSlots(**{name: getattr(self, name) and tpl.uses(name) for name in SLOT_NAMES})


def _on(self: Any) -> list[str]:
    """The names of the slots switched on, in `SLOT_NAMES` order."""
    return [name for name in SLOT_NAMES if getattr(self, name)]


TeacherSlots = dataclasses.make_dataclass(
    "TeacherSlots", [(f.name, bool, field(default=True, metadata={"doc": f.metadata["doc"]})) for f in SLOT_FIELDS],
    frozen=True, namespace={"restricted_to": _restricted_to, "on": _on, "__doc__": (
        "Which context slots the teacher may read (the original prompt is always there), one switch "
        "per `SLOT_NAMES` entry, all on by default. The paper's ablations (Table 3) switch one off: "
        "`teacher_slots: {reflection: false}`.")})
TeacherSlots.__module__ = __name__


def teacher_stats(contexts: Sequence[TeacherContext]) -> dict[str, float]:
    """Fraction of samples whose teacher read each informing slot."""
    n = max(1, len(contexts))
    return {f"teacher/{name}_fraction": sum(getattr(c, name) is not None for c in contexts) / n
            for name in INFORMING_SLOTS}
