"""What each sample's teacher sees, and whether the sample is distilled at all (SPEC §1.5).

A sample is distilled only when its teacher knows something the student did not: a solution (a
successful peer of the same group, or the solution buffer), the environment's feedback, a
reflection, or a non-empty playbook. Otherwise the teacher prompt equals the student prompt and the
sample would teach nothing, so it is masked out (as the SDPO reference does).

Method differences are config switches (see methods.py):
* `dont_reprompt_on_self_success` (SDPO): a success never sees itself as the solution, and a
  success with no other solution is not distilled;
* `environment_feedback_only_without_solution` (SDPO): feedback only when no solution is shown;
* `error_suffix_mask` (ROSD): groups with no success are skipped (the reflector needs a correct
  peer), and the reflector's explanation is the reflection slot.
This module is pure: samples and lookups in, teacher messages out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from resd.context import TeacherSlots, build_teacher_messages
from resd.envs import Outcome, Task


@dataclass
class ScoredSample:
    """One rollout with its task and outcome; `group` indexes the prompt it was sampled for."""

    task: Task
    group: int
    text: str
    prompt_ids: list[int]
    completion_ids: list[int]
    truncated: bool
    outcome: Outcome


@dataclass
class TeacherChoice:
    messages: list[dict] | None   # the teacher's chat messages (None: not distilled)
    solution_source: str          # "peer", "buffer" or ""
    used_feedback: bool
    used_reflection: bool
    used_playbook: bool

    @property
    def distilled(self) -> bool:
        return self.messages is not None


@dataclass
class TeacherSettings:
    """The slice of RESDConfig that decides teacher prompts (kept separate so this stays pure)."""

    template: str
    success_threshold: float
    use_peer_solution: bool
    use_buffer: bool
    dont_reprompt_on_self_success: bool
    feedback_only_without_solution: bool
    include_feedback: bool
    include_previous_trial: bool
    include_reflection: bool
    include_playbook: bool
    require_group_success: bool


def choose_teachers(
    samples: list[ScoredSample],
    settings: TeacherSettings,
    *,
    playbook_text: Callable[[str], str] | None = None,
    reflection: Callable[[int], str | None] | None = None,
    buffered_solution: Callable[[str], str | None] | None = None,
) -> list[TeacherChoice]:
    """One TeacherChoice per sample. `reflection` is looked up by sample index, the playbook and
    the buffer by task id."""
    success = [s.outcome.reward >= settings.success_threshold for s in samples]
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault(s.group, []).append(i)

    choices = []
    for i, s in enumerate(samples):
        members = groups[s.group]
        if settings.require_group_success and not any(success[j] for j in members):
            choices.append(TeacherChoice(None, "", False, False, False))
            continue

        solution, source = None, ""
        if settings.use_peer_solution and len(members) > 1:
            for j in members:
                if success[j] and (j != i or not settings.dont_reprompt_on_self_success):
                    solution, source = samples[j].text, "peer"
                    break
        if solution is None and settings.use_buffer and buffered_solution is not None:
            buffered = buffered_solution(s.task.id)
            if buffered and not (settings.dont_reprompt_on_self_success and buffered == s.text):
                solution, source = buffered, "buffer"
        if success[i] and settings.dont_reprompt_on_self_success and solution is None:
            choices.append(TeacherChoice(None, "", False, False, False))
            continue

        feedback = s.outcome.feedback if settings.include_feedback and s.outcome.feedback.strip() else None
        if feedback is not None and solution is not None and settings.feedback_only_without_solution:
            feedback = None
        reflected = reflection(i) if (settings.include_reflection and reflection is not None) else None
        reflected = reflected if reflected and reflected.strip() else None
        playbook = playbook_text(s.task.id) if (settings.include_playbook and playbook_text is not None) else None
        playbook = playbook if playbook and playbook.strip() else None

        if not (solution or feedback or reflected or playbook):
            choices.append(TeacherChoice(None, "", False, False, False))
            continue
        slots = TeacherSlots(
            playbook=playbook is not None,
            previous_trial=settings.include_previous_trial,
            feedback=feedback is not None,
            reflection=reflected is not None,
            solution=solution is not None,
        )
        messages = build_teacher_messages(
            settings.template,
            list(s.task.prompt),
            playbook=playbook,
            previous_trial=s.text if settings.include_previous_trial else None,
            feedback=feedback,
            reflection=reflected,
            solution=solution,
            slots=slots,
        )
        shown = getattr(messages, "values", None)
        if shown is not None and not any(shown.values()):
            # The template has no place for what we had (e.g. a playbook in SDPO's template).
            choices.append(TeacherChoice(None, "", False, False, False))
            continue
        used = (lambda slot: bool(shown.get(slot))) if shown is not None else (lambda slot: True)
        choices.append(TeacherChoice(messages, source if used("solution") else "",
                                     feedback is not None and used("feedback"),
                                     reflected is not None and used("reflection"),
                                     playbook is not None and used("playbook")))
    return choices
