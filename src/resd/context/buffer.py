"""The solution buffer B (paper §3.3, Alg. 1 line 11): the latest successful response per example.

Bounded: when full, the example whose solution was stored longest ago is evicted first, so a
long stream keeps the most recently solved problems.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

from resd.errors import UserError


@dataclass(frozen=True)
class StoredSolution:
    text: str
    step: int
    reward: float


class SolutionBuffer:
    """example id -> latest successful response, holding at most `max_size` examples."""

    def __init__(self, max_size: int | None = 4096) -> None:
        if max_size is not None and max_size < 1:
            raise UserError(f"buffer_size must be >= 1 or null (got {max_size})")
        self.max_size = max_size
        self._items: OrderedDict[str, StoredSolution] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, example_id: object) -> bool:
        return example_id in self._items

    def put(self, example_id: str, text: str, *, step: int = 0, reward: float = 1.0) -> list[str]:
        """Store (or replace) the solution for an example; returns the ids evicted to make room."""
        self._items.pop(example_id, None)
        self._items[example_id] = StoredSolution(text=text, step=int(step), reward=float(reward))
        evicted = []
        while self.max_size is not None and len(self._items) > self.max_size:
            old_id, _ = self._items.popitem(last=False)
            evicted.append(old_id)
        return evicted

    def get(self, example_id: str) -> str | None:
        item = self._items.get(example_id)
        return None if item is None else item.text

    def record(self, example_id: str) -> StoredSolution | None:
        return self._items.get(example_id)

    def ids(self) -> list[str]:
        return list(self._items)

    def state_dict(self) -> dict[str, Any]:
        return {"max_size": self.max_size,
                "items": [{"example_id": k, **asdict(v)} for k, v in self._items.items()]}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], *, max_size: int | None | str = "saved") -> "SolutionBuffer":
        """Rebuild a buffer; `max_size` overrides the saved bound (oldest entries evicted)."""
        try:
            buf = cls(max_size=state.get("max_size") if max_size == "saved" else max_size)
            for raw in state["items"]:
                buf.put(str(raw["example_id"]), str(raw["text"]), step=int(raw.get("step", 0)),
                        reward=float(raw.get("reward", 1.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"malformed solution-buffer state ({exc!r})") from exc
        return buf
