"""Reference factories: a correct program for every generated problem, written by code.

Each Manufactoria-Has criterion is a finite automaton whose accepting states are absorbing
(once a tape contains the pattern, more symbols cannot undo it). Such an automaton becomes a
factory with two pullers per state: a PULLER_RB that consumes R/B, falling through [EMPTY] to
a PULLER_YG that consumes Y/G. A transition into an accepting state routes straight to `end`;
an exhausted tape in a non-accepting state has no route and is rejected.

These programs prove that every generated problem is solvable and, run through our interpreter
on every test case, that the verdicts of generators, interpreter and scorer agree.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Hashable, TypeVar

from resd.envs.manufactoria.generators import COLOURS, Criterion

State = TypeVar("State", bound=Hashable)


def automaton_program(start: State, step: Callable[[State, str], State],
                      accepting: Callable[[State], bool]) -> str:
    """A factory for a DFA over R/B/Y/G whose accepting states are absorbing."""
    if accepting(start):
        return "START start:\n    NEXT end\n\nEND end\n"
    index: dict = {start: 0}
    queue = deque([start])
    blocks: list[str] = []

    def target(state: State) -> str:
        if accepting(state):
            return "end"
        if state not in index:
            index[state] = len(index)
            queue.append(state)
        return f"s{index[state]}_rb"

    while queue:
        state = queue.popleft()
        i = index[state]
        to = {c: target(step(state, c)) for c in COLOURS}
        blocks.append(
            f"PULLER_RB s{i}_rb:\n    [R] {to['R']}\n    [B] {to['B']}\n    [EMPTY] s{i}_yg\n\n"
            f"PULLER_YG s{i}_yg:\n    [Y] {to['Y']}\n    [G] {to['G']}\n    # tape used up here: reject\n"
        )
    return "START start:\n    NEXT s0_rb\n\n" + "\n".join(blocks) + "\nEND end\n"


def _longest_border_step(pattern: str) -> Callable[[int, str], int]:
    """KMP-style transition: length of the longest pattern prefix that ends the text read so far."""
    def step(matched: int, symbol: str) -> int:
        text = pattern[:matched] + symbol
        while text and not pattern.startswith(text):
            text = text[1:]
        return len(text)
    return step


def reference_program(criterion: Criterion) -> str:
    """A correct factory for a generated (or loaded) Manufactoria-Has criterion."""
    if criterion.family == "contains_substring":
        p = criterion.pattern
        return automaton_program(0, _longest_border_step(p), lambda m: m == len(p))
    if criterion.family == "contains_ordered":
        p = criterion.pattern
        return automaton_program(0, lambda m, c: m + (m < len(p) and p[m] == c), lambda m: m == len(p))
    if criterion.family == "contains_count":
        needs = dict(criterion.requirements)
        colours = sorted(needs)

        def step(counts: tuple[int, ...], symbol: str) -> tuple[int, ...]:
            return tuple(min(n + (c == symbol), needs[c]) for c, n in zip(colours, counts))

        return automaton_program(tuple(0 for _ in colours), step,
                                 lambda counts: all(n >= needs[c] for c, n in zip(colours, counts)))
    raise ValueError(f"no reference builder for family {criterion.family!r}")
