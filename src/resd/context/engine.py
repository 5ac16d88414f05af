"""What each sample's teacher may see: one context engine per method, one call per step.

    engine.step(step, samples) -> ContextStep(contexts, stats, outputs)

`samples` are the scored rollouts of one inner iteration (all ranks' rollouts, prompt by prompt);
`contexts[i]` is the `TeacherContext` of sample i: the privileged text its self-teacher reads
before the sample's own response tokens (paper §3.3, Alg. 1 lines 13-15), and whether the sample
is distilled at all. The trainer renders teacher prompts from these alone.

Three engines, one per way the methods build that context:

* `PeerContext` (SDPO, SDPO+ss; paper §2, §3.1): a successful response of the same prompt's
  group as the demonstration, and the environment's feedback.
* `PlaybookContext` (RESD, paper §3.2-3.3): before the update it reflects on failures, curates
  the playbook and buffers successes (`ContextUpdater`); the teacher then also reads the
  playbook, the reflection on the sample, and the buffered solution.
* `FirstErrorContext` (ROSD, arXiv 2605.28014): a greedy reflector compares a failure with a
  successful peer and quotes its first error; the explanation fills the reflection slot and
  distillation starts at the quoted token.

The selection rules every engine shares (which solution, whether feedback is shown, when a sample
teaches nothing) live in `ContextEngine._teacher_context`, written once:

* A sample is distilled only when its teacher reads something the student did not: a solution,
  the feedback, a reflection, or a non-empty playbook. Otherwise the teacher prompt would equal
  the student's and the sample is masked out (as the SDPO reference does).
* `dont_reprompt_on_self_success` (SDPO): a success never sees itself as the solution, and a
  success with no other solution is not distilled. SDPO+ss switches it off.
* `feedback_only_without_solution` (SDPO): the feedback is dropped when a solution is shown.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from resd.context.first_error import build_first_error_messages, parse_first_error
from resd.context.slots import INFORMING_SLOTS, NOT_DISTILLED, SLOT_NAMES, TeacherContext, TeacherSlots
from resd.context.updater import ContextUpdater, GenerateFn
from resd.distill.masks import locate_error_token
from resd.rollout import Group, Sample, groups_of


@dataclass
class ContextStep:
    """One engine step: a context per sample, float stats for metrics.jsonl, and the raw model
    answers the engine read (for RUN/context.jsonl)."""

    contexts: list[TeacherContext]
    stats: dict[str, float] = field(default_factory=dict)
    outputs: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ContextPolicy:
    """The rules shared by every engine (the slice of the training config that decides them)."""

    slots: TeacherSlots = TeacherSlots()
    """Slots the teacher may read: the config's `teacher_slots`, restricted to those the
    teacher template has a place for."""
    dont_reprompt_on_self_success: bool = False
    """Never show a sample its own success, nor distil a success without another solution (SDPO)."""
    feedback_only_without_solution: bool = False
    """Drop the feedback when a solution is shown (SDPO)."""


@dataclass(frozen=True)
class _Notes:
    """What an engine learned about one sample before the shared rules pick the slots."""

    slots: dict[str, str | None] = field(default_factory=dict)
    """Slot name -> the text this engine proposes for it (the playbook, a reflection, ...)."""
    buffered_solution: str | None = None
    distill_from: int = 0


class ContextEngine:
    """SDPO's context (`PeerContext`) and the shared selection rules; subclasses add notes."""

    requires_group_success = False
    """ROSD: a sample is distilled only when its group has a success (the reflector needs one)."""

    def __init__(self, policy: ContextPolicy) -> None:
        self.policy = policy

    def step(self, step: int, samples: Sequence[Sample]) -> ContextStep:
        """Update the engine's state with this iteration's outcomes, then pick each sample's context
        (`contexts[i]` belongs to `samples[i]`)."""
        groups = {g.index: g for g in groups_of(samples)}
        notes, stats, outputs = self._observe(step, samples, groups)
        contexts = [self._teacher_context(s, groups[s.group], n) for s, n in zip(samples, notes, strict=True)]
        return ContextStep(contexts, stats, outputs)

    def step_per_slots(self, step: int, samples: Sequence[Sample],
                       slot_sets: Sequence[TeacherSlots]) -> list[list[TeacherContext]]:
        """One step observed once (one set of reflections, one playbook), its contexts picked under
        each of `slot_sets`: what a run with each `teacher_slots` would read at this step. The
        update probe compares them; build the engine with every slot on so that each note exists."""
        groups = {g.index: g for g in groups_of(samples)}
        notes, _, _ = self._observe(step, samples, groups)
        return [[self._teacher_context(s, groups[s.group], n, slots) for s, n in zip(samples, notes, strict=True)]
                for slots in slot_sets]

    def _observe(self, step: int, samples: Sequence[Sample], groups: dict[int, Group]
                 ) -> tuple[list[_Notes], dict[str, float], list[dict[str, Any]]]:
        """Per-sample notes, stats and raw outputs; the base engine adds nothing."""
        return [_Notes()] * len(samples), {}, []

    def _teacher_context(self, s: Sample, group: Group, notes: _Notes,
                         slots: TeacherSlots | None = None) -> TeacherContext:
        p, slots = self.policy, slots or self.policy.slots
        if self.requires_group_success and not group.any_succeeded:
            return NOT_DISTILLED

        solution, source = None, ""
        if slots.solution and len(group.samples) > 1:
            peer = next((m for m in group.successes()
                         if m.index != s.index or not p.dont_reprompt_on_self_success), None)
            if peer is not None:
                solution, source = peer.text, "peer"
        if slots.solution and solution is None and notes.buffered_solution:
            if not (p.dont_reprompt_on_self_success and notes.buffered_solution == s.text):
                solution, source = notes.buffered_solution, "buffer"
        if solution is not None and not solution.strip():
            solution, source = None, ""  # an empty success shows the teacher nothing
        if s.succeeded and p.dont_reprompt_on_self_success and solution is None:
            return NOT_DISTILLED

        feedback = s.outcome.feedback
        if solution is not None and p.feedback_only_without_solution:
            feedback = None
        proposed = {**notes.slots, "feedback": feedback, "previous_trial": s.text, "solution": solution}
        values = {name: text if getattr(slots, name) and text and text.strip() else None
                  for name in SLOT_NAMES for text in [proposed.get(name)]}
        if not any(values[name] for name in INFORMING_SLOTS):
            return NOT_DISTILLED  # the previous trial alone is the student's own answer: nothing new
        return TeacherContext(distill=True, **values, solution_source=source if values["solution"] else "",
                              distill_from=notes.distill_from)

    # State to checkpoint (only engines that remember something across steps have any).
    def state_dict(self) -> dict[str, Any] | None:
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


PeerContext = ContextEngine
"""SDPO / SDPO+ss: successful group peers and the environment's feedback, nothing remembered."""


class PlaybookContext(ContextEngine):
    """RESD: reflection, curated playbook and solution buffer from `ContextUpdater`, plus peers."""

    def __init__(self, policy: ContextPolicy, updater: ContextUpdater) -> None:
        super().__init__(policy)
        self.updater = updater

    def _observe(self, step: int, samples: Sequence[Sample], groups: dict[int, Group]
                 ) -> tuple[list[_Notes], dict[str, float], list[dict[str, Any]]]:
        stats = self.updater.update(step, samples)
        u = self.updater
        notes = [_Notes(slots={"playbook": u.playbook_text(s.task.id), "reflection": u.reflection(s.task.id)},
                        buffered_solution=u.solution(s.task.id)) for s in samples]
        return notes, {k: float(v) for k, v in stats.items()}, list(u.last_outputs)

    def state_dict(self) -> dict[str, Any]:
        return self.updater.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updater.load_state_dict(state)


class FirstErrorContext(ContextEngine):
    """ROSD: for each failure whose group has a success, a greedy reflector quotes the first
    erroneous span; the explanation becomes the reflection and distillation starts at the quoted
    token (the whole response when the quote is not found in it)."""

    requires_group_success = True

    def __init__(self, policy: ContextPolicy, generate: GenerateFn, tokenizer: Any, *, max_new_tokens: int) -> None:
        super().__init__(policy)
        self.generate, self.tokenizer, self.max_new_tokens = generate, tokenizer, max_new_tokens

    def _observe(self, step: int, samples: Sequence[Sample], groups: dict[int, Group]
                 ) -> tuple[list[_Notes], dict[str, float], list[dict[str, Any]]]:
        started = time.perf_counter()
        jobs = []
        for i, s in enumerate(samples):
            peers = groups[s.group].successes()
            if not s.succeeded and peers:
                jobs.append((i, build_first_error_messages(s.task.prompt_text, peers[0].text, s.text,
                                                           s.outcome.feedback)))
        notes = [_Notes()] * len(samples)
        found = []
        replies = self.generate([m for _, m in jobs], self.max_new_tokens, 0.0) if jobs else []
        for (i, _), reply in zip(jobs, replies):
            parsed = parse_first_error(reply)
            start = locate_error_token(samples[i].text, parsed.quote, self.tokenizer, len(samples[i].completion_ids))
            notes[i] = _Notes(slots={"reflection": parsed.explanation}, distill_from=start or 0)
            found.append(start is not None)
        stats = {"rosd/reflections": float(len(jobs)),
                 "rosd/quote_found_fraction": sum(found) / len(found) if found else 0.0,
                 "time/reflection": time.perf_counter() - started}
        return notes, stats, []
