"""Our own generator of the Manufactoria-Has problems: three "the tape has ..." families.

What is known about the public set (`manufactoria/has_train` / `has_test`, RESD paper Table 1):
874 problems, contains_substring x340, contains_ordered x340, contains_count x194, four colours,
"easy" difficulty, seed 42, shuffled, the first int(874 * 0.85) = 742 for train and 132 for test.
The upstream "easy" parameter file is not public, so these choices are ours (documented here):

- substring / ordered patterns have length 1-6 (the upstream code default). Lengths 1-3 are
  enumerated completely (4 + 16 + 64 = 84 patterns); the remaining 256 are drawn without
  replacement, 86 of length 4 and 85 each of lengths 5 and 6, so short and long patterns both
  appear.
- count problems ask for minimum counts of 1-3 distinct colours whose minimums add up to at
  most 6. There are exactly 194 such requirement sets over four colours (4*6 + 6*15 + 4*20, see
  `count_requirement_sets`), matching the family's size, so every one of them is used once.
- test tapes have length 1-12 plus the empty tape; each problem gets the corner cases (empty
  tape, each single colour), pattern-specific matching and near-miss tapes (exact, padded,
  repeated, reversed, interrupted, one symbol changed, one short of a count, ...) and random
  tapes up to 20 cases, with at least 3 accepted and 3 rejected and never more than 35.
  Every verdict comes from the family's reference matcher, never from the case's label.

Everything is a pure function of the seed: ids (`has-<family>-<n>`), patterns, tapes and the
split are identical on every machine and Python version.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

COLOURS = "RBYG"
SEED = 42
FAMILY_SIZES: dict[str, int] = {"contains_substring": 340, "contains_ordered": 340, "contains_count": 194}
FAMILIES: tuple[str, ...] = tuple(FAMILY_SIZES)
TRAIN_FRACTION = 0.85
"""Upstream `train_ratio`; int(874 * 0.85) = 742 train, 132 test."""

PATTERN_LENGTH_QUOTAS: dict[int, int] = {1: 4, 2: 16, 3: 64, 4: 86, 5: 85, 6: 85}
MAX_COUNT_TOTAL = 6
MAX_TAPE_LENGTH = 12
TARGET_CASES = 20
MAX_CASES = 35
MIN_EACH_VERDICT = 3


@dataclass(frozen=True)
class Criterion:
    """What a factory must accept.

    family:       "contains_substring" | "contains_ordered" | "contains_count".
    pattern:      the colour string for substring/ordered problems ("" for count problems).
    requirements: (colour, minimum count) pairs for count problems (empty otherwise).
    """

    family: str
    pattern: str = ""
    requirements: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class TestCase:
    """One robot to sort: its tape, whether the factory must accept it, and why it is there."""

    input: str
    expected_accepted: bool
    description: str = ""

    def to_record(self) -> dict:
        """The Hugging Face `ground_truth` entry format (only accept/reject is checked)."""
        return {"input": self.input, "expected_output": "", "expected_accepted": self.expected_accepted,
                "check_output": False, "description": self.description}


@dataclass(frozen=True)
class Problem:
    """One generated problem: stable id, readable name, criteria sentence and its test cases."""

    id: str
    family: str
    criterion: Criterion
    name: str
    criteria: str
    tests: tuple[TestCase, ...]


# ----------------------------------------------------------------------------- reference matchers

def contains_substring(pattern: str) -> Callable[[str], bool]:
    return lambda tape: pattern in tape


def contains_ordered(pattern: str) -> Callable[[str], bool]:
    def match(tape: str) -> bool:
        symbols = iter(tape)
        return all(any(s == wanted for s in symbols) for wanted in pattern)  # greedy subsequence scan
    return match


def contains_count(requirements: tuple[tuple[str, int], ...]) -> Callable[[str], bool]:
    return lambda tape: all(tape.count(colour) >= minimum for colour, minimum in requirements)


def matcher(criterion: Criterion) -> Callable[[str], bool]:
    """The reference decision procedure of a criterion: tape -> should the factory accept it."""
    if criterion.family == "contains_substring":
        return contains_substring(criterion.pattern)
    if criterion.family == "contains_ordered":
        return contains_ordered(criterion.pattern)
    if criterion.family == "contains_count":
        return contains_count(criterion.requirements)
    raise ValueError(f"unknown Manufactoria-Has family {criterion.family!r}; expected one of {FAMILIES}")


def describe(criterion: Criterion) -> tuple[str, str]:
    """(short name, criteria sentence) in the public data set's wording."""
    if criterion.family == "contains_substring":
        p = criterion.pattern
        return (f"Contains '{p}'",
                f"Accept if the tape contains the substring '{p}' (must be consecutive); reject otherwise.")
    if criterion.family == "contains_ordered":
        p = criterion.pattern
        return (f"Contains {', '.join(p)} in order",
                f"Accept if the tape contains the subsequence '{p}' (does not have to be consecutive); "
                f"reject otherwise.")
    parts = [(c, n) for c, n in criterion.requirements]
    name = "Need " + " and ".join(f"{n} {c}{'s' if n > 1 else ''}" for c, n in parts)
    criteria = ("Accept if the tape has "
                + " and ".join(f"at least {n} {c.lower()}{'s' if n > 1 else ''}" for c, n in parts)
                + "; reject otherwise.")
    return name, criteria


# ----------------------------------------------------------------------------- parameters

def _pattern_of_index(index: int, length: int) -> str:
    digits = []
    for _ in range(length):
        index, d = divmod(index, len(COLOURS))
        digits.append(COLOURS[d])
    return "".join(reversed(digits))


def sequence_patterns(rng: random.Random, quotas: dict[int, int] = PATTERN_LENGTH_QUOTAS) -> list[str]:
    """Distinct patterns per length: all of them when the quota covers the length, else a sample."""
    patterns: list[str] = []
    for length, quota in quotas.items():
        space = len(COLOURS) ** length
        chosen = range(space) if quota >= space else rng.sample(range(space), quota)
        patterns.extend(_pattern_of_index(i, length) for i in chosen)
    return patterns


def count_requirement_sets(max_total: int = MAX_COUNT_TOTAL) -> list[tuple[tuple[str, int], ...]]:
    """Every set of 1-3 distinct colours with minimum counts >= 1 summing to at most `max_total`.

    For four colours and max_total 6 that is 4*6 + 6*15 + 4*20 = 194 sets.
    """
    sets: list[tuple[tuple[str, int], ...]] = []
    for size in (1, 2, 3):
        for colours in itertools.combinations(COLOURS, size):
            for counts in itertools.product(range(1, max_total + 1), repeat=size):
                if sum(counts) <= max_total:
                    sets.append(tuple(zip(colours, counts)))
    return sets


def family_criteria(family: str, size: int, rng: random.Random) -> list[Criterion]:
    if family in ("contains_substring", "contains_ordered"):
        patterns = sequence_patterns(rng)
        chosen = patterns if size == len(patterns) else rng.sample(patterns, size)
        return [Criterion(family, pattern=p) for p in chosen]
    if family == "contains_count":
        sets = count_requirement_sets()
        chosen_sets = sets if size == len(sets) else rng.sample(sets, size)
        return [Criterion(family, requirements=r) for r in chosen_sets]
    raise ValueError(f"unknown Manufactoria-Has family {family!r}; expected one of {FAMILIES}")


# ----------------------------------------------------------------------------- test tapes

def _random_tape(rng: random.Random, low: int, high: int, colours: str = COLOURS) -> str:
    if high < low or not colours:
        return ""
    return "".join(rng.choice(colours) for _ in range(rng.randint(low, high)))


def _spread(rng: random.Random, pattern: str, budget: int) -> str:
    """The pattern's symbols in order with random symbols between them (total length <= budget)."""
    gaps = max(0, budget - len(pattern))
    out = []
    for symbol in pattern:
        take = rng.randint(0, min(2, gaps))
        gaps -= take
        out.append(_random_tape(rng, take, take) + symbol)
    return "".join(out)


def _other(rng: random.Random, symbol: str) -> str:
    return rng.choice([c for c in COLOURS if c != symbol])


def _sequence_cases(rng: random.Random, p: str, ordered: bool) -> list[tuple[str, str]]:
    room = MAX_TAPE_LENGTH - len(p)
    cases = [
        (p, "exact pattern"),
        (_random_tape(rng, 1, min(3, room)) + p, "pattern at the end"),
        (p + _random_tape(rng, 1, min(3, room)), "pattern at the start"),
        (_random_tape(rng, 1, room // 2) + p + _random_tape(rng, 1, room - room // 2), "pattern in the middle"),
        (p + p, "pattern twice"),
    ]
    if len(p) >= 2:
        k = rng.randint(1, len(p) - 1)
        i = rng.randrange(len(p))
        j = rng.randrange(len(p))
        cases += [
            (p[::-1], "reversed pattern"),
            (p[:k] + _other(rng, p[k]) + p[k:], "pattern interrupted by one symbol"),
            (p[:i] + _other(rng, p[i]) + p[i + 1:], "one symbol of the pattern changed"),
            (p[:j] + p[j + 1:], "pattern with one symbol missing"),
            (_random_tape(rng, 0, 2) + p[:-1], "pattern without its last symbol"),
        ]
        if ordered:
            a = rng.randrange(len(p) - 1)
            swapped = p[:a] + p[a + 1] + p[a] + p[a + 2:]
            cases += [(_spread(rng, p, MAX_TAPE_LENGTH), "pattern symbols spread out"),
                      (swapped, "two neighbouring pattern symbols swapped")]
    if ordered:
        cases.append((_spread(rng, p, MAX_TAPE_LENGTH), "pattern symbols spread out"))
    return cases


def _count_cases(rng: random.Random, requirements: tuple[tuple[str, int], ...]) -> list[tuple[str, str]]:
    needed = "".join(c * n for c, n in requirements)
    others = "".join(c for c in COLOURS if c not in dict(requirements))

    def shuffled(s: str) -> str:
        chars = list(s)
        rng.shuffle(chars)
        return "".join(chars)

    cases = [
        (shuffled(needed), "exactly the required counts"),
        (shuffled(needed + "".join(c * rng.randint(1, 2) for c, _ in requirements)), "more than required"),
        (shuffled(needed + _random_tape(rng, 1, MAX_TAPE_LENGTH - len(needed))), "required counts plus padding"),
    ]
    if others:
        cases.append((shuffled(needed + _random_tape(rng, 1, 3, others)), "required counts mixed with other colours"))
        cases.append((_random_tape(rng, 3, 8, others), "none of the required colours"))
    for colour, minimum in requirements:
        short = needed.replace(colour, "", 1)
        pad = _random_tape(rng, 0, 3, others) if others else ""
        cases.append((shuffled(short + pad), f"one {colour} short of the required count"))
    return cases


def _planted_accept(rng: random.Random, criterion: Criterion) -> str:
    if criterion.family == "contains_count":
        needed = "".join(c * n for c, n in criterion.requirements)
        chars = list(needed + _random_tape(rng, 0, MAX_TAPE_LENGTH - len(needed)))
        rng.shuffle(chars)
        return "".join(chars)
    p = criterion.pattern
    if criterion.family == "contains_ordered":
        return _spread(rng, p, MAX_TAPE_LENGTH)
    room = MAX_TAPE_LENGTH - len(p)
    left = rng.randint(0, room)
    return _random_tape(rng, 0, left) + p + _random_tape(rng, 0, room - left)


def make_tests(criterion: Criterion, rng: random.Random) -> tuple[TestCase, ...]:
    """Corner cases, pattern-specific cases and random tapes, each judged by the reference matcher."""
    accepts = matcher(criterion)
    candidates: list[tuple[str, str]] = [("", "empty tape")] + [(c, f"single {c}") for c in COLOURS]
    if criterion.family == "contains_count":
        candidates += _count_cases(rng, criterion.requirements)
    else:
        candidates += _sequence_cases(rng, criterion.pattern, ordered=criterion.family == "contains_ordered")

    chosen: dict[str, str] = {}
    for tape, why in candidates:
        if len(tape) <= MAX_TAPE_LENGTH and tape not in chosen:
            chosen[tape] = why
    attempts = 0
    while len(chosen) < TARGET_CASES and attempts < 1000:
        attempts += 1
        chosen.setdefault(_random_tape(rng, 1, MAX_TAPE_LENGTH), "random tape")

    def verdict_count(value: bool) -> int:
        return sum(accepts(t) == value for t in chosen)

    # Guarantee both verdicts are well represented; planted tapes are still judged by the matcher.
    attempts = 0
    while verdict_count(True) < MIN_EACH_VERDICT and attempts < 1000:
        attempts += 1
        chosen.setdefault(_planted_accept(rng, criterion), "pattern planted in random symbols")
    attempts = 0
    while verdict_count(False) < MIN_EACH_VERDICT and attempts < 1000:
        attempts += 1
        tape = _random_tape(rng, 1, MAX_TAPE_LENGTH)
        if not accepts(tape):
            chosen.setdefault(tape, "random near miss")
    while len(chosen) > MAX_CASES:  # drop random filler first, never the corner cases
        victim = next((t for t, why in reversed(chosen.items()) if why == "random tape"), None)
        if victim is None:
            break
        del chosen[victim]
    return tuple(TestCase(tape, accepts(tape), why) for tape, why in chosen.items())


# ----------------------------------------------------------------------------- problems and split

def generate_problems(seed: int = SEED) -> list[Problem]:
    """All problems in canonical order (family by family, index within family)."""
    problems: list[Problem] = []
    for family, size in FAMILY_SIZES.items():
        criteria = family_criteria(family, size, random.Random(f"manufactoria-has/{seed}/{family}"))
        for index, criterion in enumerate(criteria):
            name, sentence = describe(criterion)
            tests = make_tests(criterion, random.Random(f"manufactoria-has/{seed}/{family}/{index}"))
            problems.append(Problem(f"has-{family}-{index}", family, criterion, name, sentence, tests))
    return problems


def split_problems(problems: list[Problem], seed: int = SEED,
                   train_fraction: float = TRAIN_FRACTION) -> dict[str, list[Problem]]:
    """Shuffle with the seed, then the first int(n * train_fraction) are train, the rest test."""
    order = list(problems)
    random.Random(seed).shuffle(order)
    cut = int(len(order) * train_fraction)
    return {"train": order[:cut], "test": order[cut:]}


@lru_cache(maxsize=4)
def generated_splits(seed: int = SEED) -> dict[str, tuple[Problem, ...]]:
    """The generated train/test problems for a seed (742/132 at the defaults), cached."""
    return {k: tuple(v) for k, v in split_problems(generate_problems(seed), seed).items()}
