"""The RESD context update (paper §3.3, Alg. 1 lines 5–12).

Per training step, before the policy update:
  1. CONCISE the playbook when a trigger fires (App. D);
  2. REFLECT on each failed response (one per example id) and, optionally, tag entries on each
     successful one; tags update the entry counters;
  3. CURATE: turn each reflection into new, non-duplicate playbook entries;
  4. store each success in the solution buffer.
Every model call goes through one `generate(prompts, max_new_tokens, temperature)` callable and
is batched: at most one call for phase 2 and one for phase 3, whatever the batch size.
Malformed model output is counted in the stats and otherwise ignored; it never raises and never
corrupts the playbook.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from resd.context.buffer import SolutionBuffer
from resd.context.playbook import ConciseSchedule, Playbook
from resd.context.reflect import (
    about_the_failure,
    DEFAULT_SECTIONS,
    build_curator_messages,
    build_reflector_messages,
    build_success_reflector_messages,
    parse_curation,
    parse_reflection,
    parse_success_tags,
    select_new_entries,
)
from resd.envs.text import strip_reasoning
from resd.errors import UserError
from resd.files import write_json_atomic
from resd.generation.sampling import GenerateFn, PromptLike
from resd.rollout import Sample


SCOPES = ("global", "per_example")
STAT_KEYS: tuple[str, ...] = tuple(f"context/{k}" for k in (
    "failures", "successes", "reflection_requests", "reflections", "reflections_unrelated", "reflections_unstructured",
    "tagging_requests", "curation_requests", "parse_failures", "reflection_parse_failures",
    "tagging_parse_failures", "curation_parse_failures", "tags_helpful", "tags_harmful",
    "tags_neutral", "unknown_tag_ids", "added", "duplicates", "rejected_entries", "entries_unrelated", "removed",
    "concise_frequency", "concise_limit", "playbook_size", "buffer_size", "generate_calls",
    "reflection_parsed_share", "reflection_kept_share", "reflection_unrelated_share",
)) + ("time/reflection", "time/curation")
"""Every key `ContextUpdater.update` returns (always all of them, so logs have fixed columns)."""
STATE_VERSION = 1


@dataclass
class ContextConfig:
    """Settings of the RESD context engine. Defaults follow the paper where it states a value."""

    playbook_scope: str = "global"
    """'global': one playbook shared by all examples (paper App. G); 'per_example': one each."""
    max_entries: int | None = 120
    """M_max, the playbook budget (App. G: Manufactoria-Has 200, BouncingSim-Easy 120,
    BouncingSim-Medium 150, FiNER 120; 120 goes with the default staleness method)."""
    concise_method: str = "staleness"
    """'prioritized' | 'staleness' | 'reset' (App. D; staleness is its stated default,
    Manufactoria-Has and BouncingSim-Medium use prioritized)."""
    concise_every: int = 4
    """F: frequency trigger every F context updates (App. D; 0 disables it)."""
    concise_after_curation: bool = False
    """Also apply the budget right after curation (off in the paper's runs)."""
    success_tagging: bool = True
    """Tag entries on successful responses too (App. G: "tagged ... on both failed and
    successful samples"); costs one extra batched generation when the playbook is non-empty."""
    buffer_size: int | None = 4096
    """Most examples the solution buffer holds (the oldest stored is evicted first)."""
    dedup_by_example: bool = True
    """With several rollouts per example, reflect/curate/tag on one of them (the paper's code does the same)."""
    reflection_max_new_tokens: int = 512
    """Token cap for reflector and success-reflector answers (not stated in the paper)."""
    curation_max_new_tokens: int = 256
    """Token cap for curator answers (not stated in the paper)."""
    reflection_temperature: float = 0.0
    """Sampling temperature of the reflector; 0 = greedy, as ROSD's reflector (reproducible)."""
    curation_temperature: float = 0.0
    """Sampling temperature of the curator; 0 = greedy."""
    max_prompt_chars: int = 6000
    """Task text shown to the reflector is cut in the middle beyond this many characters."""
    max_response_chars: int = 6000
    """Response text shown to the reflector is cut in the middle beyond this many characters."""
    curation_max_prompt_chars: int = 2000
    """Task text shown to the curator is cut in the middle beyond this many characters (shorter
    than the reflector's: the curator turns a diagnosis into a rule and needs the task's gist)."""
    max_reflection_chars: int = 1500
    """Longest diagnosis kept (longer ones are cut at a word boundary)."""
    max_new_entries: int | None = 3
    """Most entries one curation may add (guards against a small model listing dozens)."""
    max_entry_chars: int = 300
    """Longest entry kept (longer ones are cut at a word boundary)."""
    duplicate_threshold: float = 0.9
    """difflib ratio at or above which a proposed entry counts as a near duplicate."""
    sections: tuple[str, ...] = DEFAULT_SECTIONS
    """Playbook sections the curator may use; others are filed under 'general'."""
    reflector_template: str = "reflector"
    """Built-in name or path of the reflector prompt file (resd/context/templates/)."""
    success_reflector_template: str = "success_reflector"
    """Built-in name or path of the success-reflector prompt file."""
    curator_template: str = "curator"
    """Built-in name or path of the curator prompt file."""

    def __post_init__(self) -> None:
        if self.playbook_scope not in SCOPES:
            raise UserError(f"playbook_scope must be one of {', '.join(SCOPES)} (got {self.playbook_scope!r})")
        for name in ("reflection_max_new_tokens", "curation_max_new_tokens", "max_prompt_chars",
                     "max_response_chars", "curation_max_prompt_chars", "max_reflection_chars", "max_entry_chars"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"context.{name} must be >= 1 (got {getattr(self, name)})")
        if not 0.0 < self.duplicate_threshold <= 1.0:
            raise UserError(f"context.duplicate_threshold must be in (0, 1] (got {self.duplicate_threshold})")
        self.sections = tuple(self.sections)
        if "general" not in self.sections:
            self.sections = (*self.sections, "general")
        # Builds (and validates) the schedule once, so bad values fail at config time.
        ConciseSchedule(method=self.concise_method, every=self.concise_every, max_entries=self.max_entries)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sections"] = list(self.sections)
        return d


class ContextUpdater:
    """Playbook(s), solution buffer and latest reflections, updated once per training step.

    Samples arrive scored (`resd.rollout.Sample`, success decided there). `keep_solutions=False`
    keeps no solution buffer (§3.3's B; off when the teacher reads no solution). `reflect=False` skips reflecting on failures and `curate=False` skips curation (the trainer turns them off
    when the teacher reads neither the reflection nor the playbook)."""

    def __init__(self, config: ContextConfig, generate: GenerateFn, *, seed: int = 0,
                 reflect: bool = True, curate: bool = True, keep_solutions: bool = True) -> None:
        self.config = config
        self.generate = generate
        self.seed = seed
        self.reflect, self.curate, self.keep_solutions = reflect, curate, keep_solutions
        self.schedule = ConciseSchedule(method=config.concise_method, every=config.concise_every,
                                        max_entries=config.max_entries)
        self.buffer = SolutionBuffer(config.buffer_size)
        self._global = Playbook()
        self._per_example: dict[str, Playbook] = {}
        self._reflections: dict[str, str] = {}
        self.last_outputs: list[dict[str, Any]] = []
        """Raw model answers of the latest update ({"phase", "example_id", "text", "ok"}), to
        see why a playbook stays empty (e.g. a small model ignoring the format)."""

    # ---- lookups the trainer uses --------------------------------------------------------
    def playbook(self, example_id: str | None = None) -> Playbook:
        """The playbook an example reads (global scope: the one playbook)."""
        if self.config.playbook_scope == "global":
            return self._global
        if example_id is None:
            raise UserError("per-example playbooks need an example id")
        return self._per_example.setdefault(example_id, Playbook())

    def playbooks(self) -> list[Playbook]:
        return [self._global] if self.config.playbook_scope == "global" else list(self._per_example.values())

    def playbook_text(self, example_id: str) -> str:
        """The rendered playbook for that example ("" when it is empty)."""
        if self.config.playbook_scope == "per_example" and example_id not in self._per_example:
            return ""
        return self.playbook(example_id).render()

    def reflection(self, example_id: str) -> str | None:
        """The diagnosis from the latest update that saw this example (None if not reflected)."""
        return self._reflections.get(example_id)

    def solution(self, example_id: str) -> str | None:
        """The buffered successful response for this example, if any."""
        return self.buffer.get(example_id) if self.keep_solutions else None

    def playbook_size(self) -> float:
        """Entries in the global playbook, or the mean over per-example playbooks."""
        books = self.playbooks()
        return float(sum(len(b) for b in books) / len(books)) if books else 0.0

    # ---- the update ----------------------------------------------------------------------
    def update(self, step: int, samples: Sequence[Sample]) -> dict[str, float]:
        """Run one context update on a scored batch and return stats (all floats)."""
        cfg = self.config
        stats: dict[str, float] = defaultdict(float, dict.fromkeys(STAT_KEYS, 0.0))

        concise = self.schedule.run(self.playbooks(), step=step, seed=self._seed(step))
        stats["context/removed"] += len(concise["removed"])
        stats["context/concise_frequency"] = float(concise["frequency"])
        stats["context/concise_limit"] = float(concise["limit"])

        self.last_outputs = []
        failures, successes = self._select(samples)
        stats["context/failures"] = float(len(failures))
        stats["context/successes"] = float(len(successes))
        for s in samples:  # a new update replaces the previous step's reflection (r = ∅ on success)
            self._reflections.pop(s.task.id, None)

        diagnoses = self._reflect_phase(step, failures, successes, stats)
        self._curate_phase(step, diagnoses, stats)
        if cfg.concise_after_curation:
            stats["context/removed"] += len(self.schedule.enforce_limit(self.playbooks(), step=step,
                                                                        seed=self._seed(step)))
        if self.keep_solutions:
            for s in successes:
                self.buffer.put(s.task.id, s.text, step=step, reward=s.outcome.reward)

        stats["context/parse_failures"] = (stats["context/reflection_parse_failures"]
                                           + stats["context/tagging_parse_failures"]
                                           + stats["context/curation_parse_failures"])
        requests = stats["context/reflection_requests"]
        parsed = stats["context/reflections"] + stats["context/reflections_unrelated"]
        stats["context/reflection_parsed_share"] = parsed / requests if requests else 0.0
        stats["context/reflection_kept_share"] = stats["context/reflections"] / requests if requests else 0.0
        stats["context/reflection_unrelated_share"] = stats["context/reflections_unrelated"] / requests if requests else 0.0
        stats["context/playbook_size"] = self.playbook_size()
        stats["context/buffer_size"] = float(len(self.buffer))
        return dict(stats)

    def _seed(self, step: int) -> int:
        return self.seed * 1_000_003 + int(step)

    def _select(self, samples: Sequence[Sample]) -> tuple[list[Sample], list[Sample]]:
        """Failures and successes to act on; with dedup, the first failure and the last success
        of each example id (the most recent success is the one worth caching)."""
        failures = [s for s in samples if not s.succeeded]
        successes = [s for s in samples if s.succeeded]
        if self.config.dedup_by_example:
            first_fail: dict[str, Sample] = {}
            for s in failures:
                first_fail.setdefault(s.task.id, s)
            last_success: dict[str, Sample] = {}
            for s in successes:
                last_success[s.task.id] = s
            failures, successes = list(first_fail.values()), list(last_success.values())
        return failures, successes

    def _call(self, prompts: list[PromptLike], max_new_tokens: int, temperature: float,
              stats: dict[str, float]) -> list[str]:
        if not prompts:
            return []
        outputs = list(self.generate(prompts, max_new_tokens, temperature))
        stats["context/generate_calls"] += 1
        if len(outputs) != len(prompts):
            raise RuntimeError(f"generate returned {len(outputs)} completions for {len(prompts)} prompts")
        return outputs

    def _reflect_phase(self, step: int, failures: list[Sample], successes: list[Sample],
                       stats: dict[str, float]) -> list[tuple[Sample, str]]:
        """One batched call: reflections on failures and tag-only reviews of successes."""
        cfg = self.config
        started = time.perf_counter()
        jobs: list[tuple[str, Sample, Playbook]] = []
        prompts: list[PromptLike] = []
        if self.reflect:
            for s in failures:
                book = self.playbook(s.task.id)
                jobs.append(("failure", s, book))
                prompts.append(build_reflector_messages(
                    s.task.prompt_text, s.text, s.outcome.feedback, book, template=cfg.reflector_template,
                    max_prompt_chars=cfg.max_prompt_chars, max_response_chars=cfg.max_response_chars))
        if cfg.success_tagging:
            for s in successes:
                book = self.playbook(s.task.id)
                if len(book):  # nothing to tag in an empty playbook
                    jobs.append(("success", s, book))
                    prompts.append(build_success_reflector_messages(
                        s.task.prompt_text, s.text, book, template=cfg.success_reflector_template,
                        max_prompt_chars=cfg.max_prompt_chars, max_response_chars=cfg.max_response_chars))
        outputs = self._call(prompts, cfg.reflection_max_new_tokens, cfg.reflection_temperature, stats)

        diagnoses: list[tuple[Sample, str]] = []
        for (kind, sample, book), prompt, text in zip(jobs, prompts, outputs):
            if kind == "failure":
                stats["context/reflection_requests"] += 1
                parsed = parse_reflection(text, book.ids(), max_chars=cfg.max_reflection_chars,
                                          source="\n".join(m["content"] for m in prompt))
                stats["context/unknown_tag_ids"] += parsed.unknown_ids
                if not parsed.ok:
                    self._log("reflection", sample, text, False, "unparsed")
                    stats["context/reflection_parse_failures"] += 1
                    continue
                if not about_the_failure(parsed.diagnosis, feedback=sample.outcome.feedback,
                                         attempt=strip_reasoning(sample.text), task=sample.task.prompt_text):
                    # Parsed, but about something else: the teacher never sees it, nor does the curator.
                    self._log("reflection", sample, text, False, "unrelated")
                    stats["context/reflections_unrelated"] += 1
                    continue
                self._log("reflection", sample, text, True)
                stats["context/reflections"] += 1
                stats["context/reflections_unstructured"] += float(not parsed.structured)
                tags = parsed.tags
                self._reflections[sample.task.id] = parsed.diagnosis
                diagnoses.append((sample, parsed.diagnosis))
            else:
                stats["context/tagging_requests"] += 1
                tags, ok = parse_success_tags(text, book.ids())
                self._log("success_tagging", sample, text, ok)
                if not ok:
                    stats["context/tagging_parse_failures"] += 1
                    continue
            for entry_id, tag in tags.items():
                book.tag(entry_id, tag, step)
                stats[f"context/tags_{tag}"] += 1
        stats["time/reflection"] = time.perf_counter() - started
        return diagnoses

    def _curate_phase(self, step: int, diagnoses: list[tuple[Sample, str]],
                      stats: dict[str, float]) -> None:
        """One batched call: each reflection proposes entries; duplicates are not added."""
        cfg = self.config
        started = time.perf_counter()
        if self.curate and diagnoses:
            jobs = [(s, diagnosis, self.playbook(s.task.id)) for s, diagnosis in diagnoses]
            prompts: list[PromptLike] = [
                build_curator_messages(s.task.prompt_text, diagnosis, book, template=cfg.curator_template,
                                       sections=cfg.sections, max_prompt_chars=cfg.curation_max_prompt_chars)
                for s, diagnosis, book in jobs]
            outputs = self._call(prompts, cfg.curation_max_new_tokens, cfg.curation_temperature, stats)
            for (sample, diagnosis, book), text in zip(jobs, outputs):
                stats["context/curation_requests"] += 1
                curation = parse_curation(text, sections=cfg.sections)
                self._log("curation", sample, text, curation.ok, "" if curation.ok else "unparsed")
                if not curation.ok:
                    stats["context/curation_parse_failures"] += 1
                    continue
                related = [op for op in curation.operations if about_the_failure(
                    op.content, feedback=f"{sample.outcome.feedback}\n{diagnosis}", attempt=strip_reasoning(sample.text),
                    task=sample.task.prompt_text, minimum=1)]
                stats["context/entries_unrelated"] += len(curation.operations) - len(related)
                curation.operations = related
                # Checked against the playbook as it grows, so two reflections in one batch
                # cannot add the same lesson twice.
                accepted, duplicates, rejected = select_new_entries(
                    curation.operations, [e.content for e in book.entries()], max_new=cfg.max_new_entries,
                    max_chars=cfg.max_entry_chars, threshold=cfg.duplicate_threshold)
                for op in accepted:
                    book.add(op.content, section=op.section, step=step)
                stats["context/added"] += len(accepted)
                stats["context/duplicates"] += duplicates
                stats["context/rejected_entries"] += rejected
        stats["time/curation"] = time.perf_counter() - started

    def _log(self, phase: str, sample: Sample, text: Any, ok: bool, dropped: str = "") -> None:
        """Record a raw model answer; `dropped` says why it was not used ("unparsed", "unrelated")."""
        entry = {"phase": phase, "example_id": sample.task.id,
                 "text": text if isinstance(text, str) else repr(text), "ok": bool(ok)}
        if dropped:
            entry["dropped"] = dropped
        self.last_outputs.append(entry)

    # ---- persistence ---------------------------------------------------------------------
    def playbook_snapshot(self) -> dict[str, Any]:
        """What a run's playbooks/step_NNNNNN.json holds: the playbook state (global scope) or
        {"scope": "per_example", "playbooks": {example id: state}}; `resd playbook show` reads both."""
        if self.config.playbook_scope == "global":
            return {"scope": "global", **self._global.state_dict()}
        return {"scope": "per_example",
                "playbooks": {k: b.state_dict() for k, b in self._per_example.items()}}

    def save_playbook(self, path: str | Path) -> None:
        write_json_atomic(path, self.playbook_snapshot())

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: playbook(s), schedule counter, buffer, reflections."""
        return {
            "version": STATE_VERSION,
            "config": self.config.to_dict(),
            "seed": self.seed,
            "playbook": self.playbook_snapshot(),
            "schedule": self.schedule.state_dict(),
            "buffer": self.buffer.state_dict(),
            "reflections": dict(self._reflections),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            snapshot = state["playbook"]
            scope = snapshot.get("scope", "global")
        except (KeyError, TypeError, AttributeError) as exc:
            raise UserError("not a context-updater state (missing 'playbook')") from exc
        if scope != self.config.playbook_scope:
            raise UserError(f"the checkpoint holds a {scope} playbook but the config asks for "
                            f"playbook_scope={self.config.playbook_scope!r}; use the same scope to resume")
        if scope == "global":
            self._global = Playbook.from_state_dict(snapshot)
        else:
            self._per_example = {str(k): Playbook.from_state_dict(v) for k, v in snapshot["playbooks"].items()}
        self.schedule.load_state_dict(state.get("schedule", {}))
        # The configured size wins over the saved one, so a resumed run can change it.
        self.buffer = SolutionBuffer.from_state_dict(state.get("buffer", {"items": []}),
                                                     max_size=self.config.buffer_size)
        self._reflections = {str(k): str(v) for k, v in state.get("reflections", {}).items()}
