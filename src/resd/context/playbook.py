"""The playbook: a persistent, counted list of lessons the self-teacher reads (paper §3.3, App. D).

An entry is one natural-language lesson with a section, a stable id (section slug + one global
counter, so ids never repeat even after entries are removed), helpful/harmful counts from the
reflector's tags, the step it was created at and the step it was last tagged at.

`Playbook.concise` implements the three pruning methods of App. D and
`ConciseSchedule` the two triggers (every F context updates without the budget; whenever the
size exceeds M_max with it). Everything here is pure Python and deterministic given a seed.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

from resd.errors import UserError
from resd.files import UnreadableFile, read_json_file, write_json_atomic

Tag = Literal["helpful", "harmful", "neutral"]
TAGS: tuple[str, ...] = ("helpful", "harmful", "neutral")
ConciseMethod = Literal["prioritized", "staleness", "reset"]
CONCISE_METHODS: tuple[str, ...] = ("prioritized", "staleness", "reset")

STATE_VERSION = 1
DEFAULT_SECTION = "general"


def normalize_section(section: str) -> str:
    """Lower-case words separated by single spaces: 'Common  Mistakes!' -> 'common mistakes'."""
    words = re.findall(r"[a-z0-9]+", section.lower())
    return " ".join(words)[:40].strip() or DEFAULT_SECTION


def section_slug(section: str) -> str:
    """Short id prefix for a section: initials of a multi-word name, else its first 4 letters."""
    words = normalize_section(section).split()
    if len(words) == 1:
        return words[0][:4]
    return "".join(w[0] for w in words)[:6]


def one_line(text: str) -> str:
    """Collapse whitespace so that an entry always renders as exactly one line."""
    return " ".join(text.split())


@dataclass
class Entry:
    """One playbook lesson and its usage history."""

    id: str
    section: str
    content: str
    helpful: int = 0
    harmful: int = 0
    created_step: int = 0
    last_tagged_step: int | None = None
    """Step of the latest helpful/harmful tag; None while the entry was never tagged."""

    @property
    def unused(self) -> bool:
        """Never tagged helpful or harmful (App. D: h + d = 0)."""
        return self.helpful + self.harmful == 0

    @property
    def net_harmful(self) -> bool:
        """More harmful than helpful tags (see `Playbook.concise` for the tie rule)."""
        return self.harmful > self.helpful

    @property
    def category(self) -> str:
        """'unused', 'harmful' or 'helpful': the partition every concise method starts from."""
        if self.unused:
            return "unused"
        return "harmful" if self.net_harmful else "helpful"

    @property
    def recency(self) -> int:
        """The step used to rank staleness: last tag, or creation for never-tagged entries."""
        return self.created_step if self.last_tagged_step is None else self.last_tagged_step


class Playbook:
    """An ordered set of entries with tag counters, rendering, pruning and atomic persistence."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._counter = 0  # global id counter: never reused, survives removals and resets

    # ---- reading -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._entries

    def entries(self) -> list[Entry]:
        """Entries in insertion order (the objects themselves; mutate only through the API)."""
        return list(self._entries.values())

    def get(self, entry_id: str) -> Entry:
        try:
            return self._entries[entry_id]
        except KeyError:
            raise KeyError(f"no playbook entry {entry_id!r}") from None

    def ids(self) -> list[str]:
        return list(self._entries)

    def sections(self) -> list[str]:
        """Section names in order of first appearance."""
        return list(dict.fromkeys(e.section for e in self._entries.values()))

    def render(self) -> str:
        """The text models read: one '## section' block per section, one entry a line.

        Each line is `[id] (helpful H, harmful D) content`, so a reflector can cite the id when it
        tags the entry. An empty playbook renders as "" (prompt builders decide what to show).
        """
        blocks = []
        for section in self.sections():
            lines = [f"## {section}"]
            for e in self._entries.values():
                if e.section == section:
                    lines.append(f"[{e.id}] (helpful {e.helpful}, harmful {e.harmful}) {e.content}")
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks)

    # ---- writing -------------------------------------------------------------------------
    def add(self, content: str, section: str = DEFAULT_SECTION, step: int = 0) -> str:
        """Add one lesson and return its new id, e.g. 'mist-00007'."""
        text = one_line(content)
        if not text:
            raise ValueError("a playbook entry needs non-empty content")
        section = normalize_section(section)
        self._counter += 1
        entry_id = f"{section_slug(section)}-{self._counter:05d}"
        self._entries[entry_id] = Entry(id=entry_id, section=section, content=text, created_step=int(step))
        return entry_id

    def tag(self, entry_id: str, tag: str, step: int) -> None:
        """Record a reflector's judgement of one entry at `step`.

        'helpful'/'harmful' increment the count and set the last-tagged step; 'neutral' (the entry
        played no part in the attempt) changes nothing, so an entry only ever tagged neutral stays
        'unused' and ages like one.
        """
        if tag not in TAGS:
            raise ValueError(f"unknown tag {tag!r}; use one of {', '.join(TAGS)}")
        entry = self.get(entry_id)
        if tag == "neutral":
            return
        if tag == "helpful":
            entry.helpful += 1
        else:
            entry.harmful += 1
        entry.last_tagged_step = int(step)

    def remove(self, entry_ids: Iterable[str]) -> list[str]:
        """Remove the given ids (unknown ones ignored); returns those actually removed."""
        removed = [i for i in entry_ids if i in self._entries]
        for i in removed:
            del self._entries[i]
        return removed

    # ---- concise (App. D) ----------------------------------------------------------------
    def concise(
        self,
        method: str,
        *,
        step: int,
        max_entries: int | None = None,
        enforce_budget: bool = True,
        seed: int = 0,
    ) -> list[str]:
        """Prune the playbook; returns the removed ids in playbook order.

        Entries are partitioned into unused (never tagged), harmful (harmful > helpful) and
        helpful (the rest). App. D writes "d ≥ h and d > 0" (net harmful); we drop
        only strictly more harmful than helpful, so an entry with tied counts gets another chance.

        - prioritized: drop unused and harmful; if still above `max_entries` (and the budget is
          enforced), drop uniformly random helpful entries (seeded) until within budget.
        - staleness: drop harmful, and unused entries created more than one context-update
          step before `step` (newer ones get one more step to be tagged); if still above budget,
          evict the entries with the oldest last-tagged step (creation step for never-tagged
          ones; ties: oldest entry first) until within budget.
        - reset: drop everything (the id counter keeps counting).
        """
        if method not in CONCISE_METHODS:
            raise UserError(f"unknown concise method {method!r}; use one of {', '.join(CONCISE_METHODS)}")
        if max_entries is not None and max_entries < 0:
            raise UserError(f"max_entries must be >= 0 (got {max_entries})")
        entries = self.entries()
        if method == "reset":
            drop = {e.id for e in entries}
        elif method == "prioritized":
            drop = {e.id for e in entries if e.category in ("unused", "harmful")}
        else:  # staleness
            drop = {
                e.id
                for e in entries
                if e.category == "harmful" or (e.category == "unused" and step - e.created_step > 1)
            }
        kept = [e for e in entries if e.id not in drop]
        if enforce_budget and max_entries is not None and len(kept) > max_entries:
            excess = len(kept) - max_entries
            if method == "prioritized":
                rng = random.Random(seed)
                drop.update(e.id for e in rng.sample(kept, excess))
            else:
                order = sorted(range(len(kept)), key=lambda i: (kept[i].recency, i))
                drop.update(kept[i].id for i in order[:excess])
        return self.remove([e.id for e in entries if e.id in drop])

    # ---- persistence ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot (the format `save` writes)."""
        return {
            "version": STATE_VERSION,
            "counter": self._counter,
            "entries": [asdict(e) for e in self._entries.values()],
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "Playbook":
        """Rebuild a playbook from `state_dict()` output; a malformed dict raises UserError."""
        if not isinstance(state, dict) or not isinstance(state.get("entries"), list):
            raise UserError("not a playbook state: expected a JSON object with an 'entries' list "
                            "(written by Playbook.save or a run's playbooks/ folder)")
        book = cls()
        try:
            for raw in state["entries"]:
                if not isinstance(raw, dict) or not isinstance(raw["id"], str) or not isinstance(raw["content"], str):
                    raise ValueError("an entry is an object whose 'id' and 'content' are strings")
                last = raw.get("last_tagged_step")
                entry = Entry(
                    id=raw["id"],
                    section=normalize_section(str(raw.get("section", DEFAULT_SECTION))),
                    content=one_line(raw["content"]),
                    helpful=_count(raw.get("helpful", 0), "helpful"),
                    harmful=_count(raw.get("harmful", 0), "harmful"),
                    created_step=_count(raw.get("created_step", 0), "created_step"),
                    last_tagged_step=None if last is None else _count(last, "last_tagged_step"),
                )
                book._entries[entry.id] = entry
            counter = _count(state.get("counter", 0), "counter")
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"malformed playbook entry ({type(exc).__name__}: {str(exc)[:120]}); each needs "
                            f"'id' and 'content' strings and counts that are whole numbers >= 0") from exc
        numbers = [int(m.group(1)) for i in book._entries if (m := re.search(r"(\d{1,9})$", i))]
        book._counter = max([counter, *numbers, 0])
        return book

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write JSON atomically (temp file + rename), so a crash never leaves half a playbook."""
        write_json_atomic(path, self.state_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Playbook":
        return cls.from_state_dict(read_json(path))


def _count(value: Any, name: str) -> int:
    """A saved count or step: a whole number >= 0 (not a bool, a float or a numeric string)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a whole number >= 0, not {str(value)[:40]!r}")
    return value


def read_json(path: str | os.PathLike[str]) -> Any:
    """A saved playbook or context state: a regular file of bounded JSON (resd.files)."""
    p = Path(path)
    try:
        return read_json_file(p)
    except FileNotFoundError:
        raise UserError(f"no such file: {p} (give the path of a saved playbook .json)") from None
    except UnreadableFile as exc:
        raise UserError(f"{p} is not valid JSON for a playbook ({str(exc)[:160]})") from None


@dataclass
class ConciseSchedule:
    """When to concise (App. D triggers) and how.

    Frequency trigger: on every `every`-th context update (F=4), prune harmful/stale entries
    without enforcing the budget. Limit trigger: whenever the playbook holds more than
    `max_entries` (M_max) entries, concise with the budget enforced. Both can fire on the same
    update (frequency first), so the playbook never leaves `run` above its budget.
    """

    method: str = "staleness"
    """'prioritized' | 'staleness' | 'reset' (App. D)."""
    every: int = 4
    """F: run the frequency trigger every this many context updates (0 disables it)."""
    max_entries: int | None = 120
    """M_max: size above which the limit trigger fires (None: no budget)."""
    updates_seen: int = field(default=0)
    """How many context updates `run` has counted (persisted with checkpoints)."""

    def __post_init__(self) -> None:
        if self.method not in CONCISE_METHODS:
            raise UserError(f"unknown concise method {self.method!r}; use one of {', '.join(CONCISE_METHODS)}")
        if self.every < 0:
            raise UserError(f"concise_every must be >= 0 (got {self.every})")
        if self.max_entries is not None and self.max_entries < 1:
            raise UserError(f"max_entries must be >= 1 or null (got {self.max_entries})")

    def frequency_due(self, update_index: int) -> bool:
        """True on the F-th, 2F-th, ... context update (1-based `update_index`)."""
        return self.every > 0 and update_index > 0 and update_index % self.every == 0

    def over_budget(self, size: int) -> bool:
        return self.max_entries is not None and size > self.max_entries

    def run(self, playbooks: Iterable[Playbook], *, step: int, seed: int = 0) -> dict[str, Any]:
        """Count one context update and apply whichever triggers fire to each playbook.

        Returns {"frequency": bool, "limit": bool, "removed": [ids...]}.
        """
        self.updates_seen += 1
        frequency = self.frequency_due(self.updates_seen)
        fired_limit = False
        removed: list[str] = []
        for book in playbooks:
            if frequency:
                removed += book.concise(self.method, step=step, max_entries=self.max_entries,
                                        enforce_budget=False, seed=seed)
            if self.over_budget(len(book)):
                fired_limit = True
                removed += book.concise(self.method, step=step, max_entries=self.max_entries,
                                        enforce_budget=True, seed=seed)
        return {"frequency": frequency, "limit": fired_limit, "removed": removed}

    def enforce_limit(self, playbooks: Iterable[Playbook], *, step: int, seed: int = 0) -> list[str]:
        """The limit trigger alone (used for the optional concise after curation)."""
        removed: list[str] = []
        for book in playbooks:
            if self.over_budget(len(book)):
                removed += book.concise(self.method, step=step, max_entries=self.max_entries,
                                        enforce_budget=True, seed=seed)
        return removed

    def state_dict(self) -> dict[str, Any]:
        return {"method": self.method, "every": self.every, "max_entries": self.max_entries,
                "updates_seen": self.updates_seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates_seen = int(state.get("updates_seen", 0))
