"""Our own generator of the Manufactoria-Has problems: three "the tape has ..." families.

What is known about the public set (`manufactoria/has_train` / `has_test`, RESD paper Table 1):
874 problems, contains_substring x340, contains_ordered x340, contains_count x194, four colours,
"easy" difficulty, seed 42, shuffled, the first int(874 * 0.85) = 742 for train and 132 for test.
The task's generator code is public, its "easy" parameter file is not, so:

- test tapes follow the public generator's recipe (`make_tests`): corner tapes, tapes built around
  the pattern (matches, near misses, padded with up to 18 random symbols a side), random top-ups
  to at least 3 accepted and 3 rejected, at most 35 tapes; every verdict comes from the family's
  reference matcher. With our parameters (below) that gives 15-32 tapes per problem, up to 41
  symbols (the hub problems carry 21-32; their shortest patterns are not known).
- the criteria sentences and names use the public set's wording (`describe`).
- the parameters are ours: substring / ordered patterns of length 1-6 (lengths 1-3 all 84
  patterns; of the other 256, 86 of length 4 and 85 each of lengths 5 and 6); count problems ask
  for minimum counts of 1-3 distinct colours adding up to at most 6: exactly the 194 such sets.

Everything is a pure function of the seed: ids (`has-<family>-<n>`), patterns, tapes and the
split are identical on every machine and Python version.
"""

from __future__ import annotations

import itertools
import random
import re
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
"""Longest random top-up tape (pattern tapes are longer)."""
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
    p = criterion.pattern
    if criterion.family == "contains_substring":
        return (f"Contains '{p}'",
                f"Accept if the tape contains the substring '{p}' (must be consecutive); reject otherwise.")
    if criterion.family == "contains_ordered":
        return (f"Contains {p}",
                f"Accept if the tape contains the subsequence {p} (does not have to be consecutive); "
                f"reject otherwise.")
    parts = [(c, n, "s" if n > 1 else "") for c, n in criterion.requirements]
    name = (f"At least {parts[0][1]} {parts[0][0]}{parts[0][2]}" if len(parts) == 1
            else "Need " + " and ".join(f"{n} {c}{s}" for c, n, s in parts))
    criteria = ("Accept if the tape has " + " and ".join(f"at least {n} {c.lower()}{s}" for c, n, s in parts)
                + "; reject otherwise.")
    return name, criteria


_SUBSTRING_SENTENCE = re.compile(r"the substring '([RBYG]+)' \(must be consecutive\)")
_ORDERED_SENTENCE = re.compile(r"the subsequence '?([RBYG]+)'? \(does not have to be consecutive\)")
_COUNT_SENTENCE = re.compile(r"Accept if the tape has ((?:at least \d+ [rbyg]s?(?: and )?)+); reject otherwise")
_COUNT_PART = re.compile(r"at least (\d+) ([rbyg])s?")


def criterion_from_sentence(criteria: str) -> Criterion | None:
    """The criterion a criteria sentence in the public wording states (None for any other text),
    so that loaded problems get a reference factory too."""
    if match := _SUBSTRING_SENTENCE.search(criteria):
        return Criterion("contains_substring", pattern=match.group(1))
    if match := _ORDERED_SENTENCE.search(criteria):
        return Criterion("contains_ordered", pattern=match.group(1))
    if match := _COUNT_SENTENCE.search(criteria):
        requirements = tuple((c.upper(), int(n)) for n, c in _COUNT_PART.findall(match.group(1)))
        if len({c for c, _ in requirements}) == len(requirements):
            return Criterion("contains_count", requirements=requirements)
    return None


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
#
# The recipe of the RESD task's generator (facts read from it; the code is ours): a few corner
# tapes, then tapes built around the pattern (matches and near misses, padded with random symbols
# up to 18 on each side), then random tapes until at least 3 accepted and 3 rejected, at most 35.

SHORT_PAD, MEDIUM_PAD, LONG_PAD = 3, 6, 9
MEDIUM_RUN, LONG_RUN = 12, 18
FIXED_CORNER_TAPES = ("RB", "BR", "RBR", "BRB", "RRB", "BBR", "")
RANDOM_CORNER_TAPES = 5
TOP_UP_ATTEMPTS = 50


def _random_tape(rng: random.Random, length: int, colours: str = COLOURS) -> str:
    return "".join(rng.choice(colours) for _ in range(length)) if colours else ""


def _with_gaps(rng: random.Random, pattern: str, low: int = 1, high: int = 1) -> str:
    """The pattern's symbols in order with `low`-`high` random symbols between neighbours."""
    out = [pattern[:1]]
    for symbol in pattern[1:]:
        out.append(_random_tape(rng, rng.randint(low, high)) + symbol)
    return "".join(out)


def _corner_tapes(rng: random.Random) -> list[str]:
    short = ["", *COLOURS, *(a + b for a in COLOURS for b in COLOURS)]
    corner = sorted({*(rng.choice(short) for _ in range(RANDOM_CORNER_TAPES)), *FIXED_CORNER_TAPES})
    rng.shuffle(corner)
    return ["", COLOURS[0], COLOURS[:2], *corner]


def _substring_tapes(rng: random.Random, p: str) -> list[str]:
    others = "".join(c for c in COLOURS if c not in p)
    tapes = [p, p + _random_tape(rng, SHORT_PAD), _random_tape(rng, MEDIUM_PAD) + p,
             _random_tape(rng, rng.randint(1, 3)) + p + _random_tape(rng, rng.randint(1, 3)),
             p + _random_tape(rng, rng.randint(1, 3)) + p,
             _random_tape(rng, rng.randint(3, 5)) + p + _random_tape(rng, rng.randint(3, 5))]
    if len(p) >= 2 and len(set(p)) < len(p):
        tapes.append(p + p[1:])  # overlapping occurrences
    if len(p) >= 2:
        tapes.append(_with_gaps(rng, p))
    for cut in range(1, len(p)):  # a prefix of the pattern inside random symbols
        pad = _random_tape(rng, rng.randint(3, 6))
        tapes.append(pad + p[:cut] + pad)
    if len(p) >= 2:
        pad = _random_tape(rng, rng.randint(2, 4))
        tapes.append(pad + p[::-1] + pad)
    if len(p) >= 3:
        shuffled = p[::-1] if len(set(p)) > 1 else p
        if shuffled == p and len(set(p)) > 1:
            shuffled = p[1] + p[0] + p[2:]
        pad = _random_tape(rng, SHORT_PAD)
        tapes += [pad + shuffled + pad, p[:len(p) // 2] + _random_tape(rng, 1) + p[len(p) // 2:]]
    if others:
        tapes.append(_random_tape(rng, MEDIUM_RUN, others))
    if len(p) >= 2:
        at = rng.randint(1, len(p) - 1)
        pad = _random_tape(rng, SHORT_PAD)
        tapes += [pad + p[:at] + _random_tape(rng, 1) + p[at:] + pad,
                  _random_tape(rng, 2) + _with_gaps(rng, p) + _random_tape(rng, 2)]
    return tapes


def _ordered_tapes(rng: random.Random, p: str) -> list[str]:
    others = "".join(c for c in COLOURS if c not in p)
    half = len(p) // 2
    tapes = [p] + [p[:i + 1] + _random_tape(rng, 1) + p[i + 1:] for i in range(len(p) - 1)]
    if len(p) >= 2:
        tapes.append(_with_gaps(rng, p))
    tapes += [p + _random_tape(rng, SHORT_PAD), _random_tape(rng, MEDIUM_PAD) + p]
    if len(p) >= 2:
        tapes += [_random_tape(rng, rng.randint(2, 4)) + _with_gaps(rng, p, 1, 3) + _random_tape(rng, rng.randint(2, 4)),
                  p[:half] + _random_tape(rng, 1) + p[half:] + _random_tape(rng, 2) + p,
                  p[1:], p[:-1]]
    if len(p) > 2:
        tapes.append(p[:half] + p[half + 1:])
    if len(p) >= 2:
        pad = _random_tape(rng, rng.randint(2, 5))
        tapes.append(pad + p[::-1] + pad)
    if len(p) >= 3:
        pad = _random_tape(rng, SHORT_PAD)
        tapes.append(pad + p[-1] + p[:-1] + pad)  # last symbol moved to the front
        pad = _random_tape(rng, LONG_PAD)
        tapes.append(pad + p[:-2] + p[-1] + pad)  # second-to-last symbol missing
    if others:
        tapes.append(_random_tape(rng, MEDIUM_RUN, others))
    if len(p) >= 3:
        pad = _random_tape(rng, LONG_RUN)
        tapes.append(pad + p[:half] + p[half + 1:] + pad)  # a middle symbol missing, in a long tape
    return tapes


def _count_tapes(rng: random.Random, requirements: tuple[tuple[str, int], ...]) -> list[str]:
    needed = dict(requirements)
    others = "".join(c for c in COLOURS if c not in needed)
    exact = "".join(c * n for c, n in requirements)

    def shuffled(symbols: str) -> str:
        chars = list(symbols)
        rng.shuffle(chars)
        return "".join(chars)

    def one_short(which: int | None) -> str:
        """Every requirement met except one symbol less of requirement `which` (None: of all)."""
        return "".join(c * (n - 1 if (which is None or i == which) and n > 1 else n)
                       for i, (c, n) in enumerate(requirements) if which is not None or n > 1)

    tapes = [shuffled(exact), shuffled(exact + "".join(c * rng.randint(1, 2) for c, _ in requirements))]
    if others:
        tapes.append(shuffled(exact + _random_tape(rng, 3, others)))
    more = "".join(c * (n + rng.randint(0, 2)) for c, n in requirements)
    if others and MEDIUM_RUN > len(more):
        more += _random_tape(rng, MEDIUM_RUN - len(more))
    tapes.append(shuffled(more))
    extra = "".join(rng.choice(requirements)[0] if rng.random() < 0.6 else rng.choice(COLOURS)
                    for _ in range(max(0, LONG_RUN - len(exact))))
    tapes.append(shuffled(exact + extra))
    if len(requirements) > 1:
        tapes.append(shuffled("".join(c * n for c, n in requirements[:-1]) + _random_tape(rng, 5, others)))
    tapes.append(shuffled(one_short(0) + _random_tape(rng, 3, others)))
    if others:
        tapes.append(_random_tape(rng, MEDIUM_RUN, others))
    all_short = one_short(None)
    tapes.append(shuffled(all_short + _random_tape(rng, max(5, MEDIUM_RUN - len(all_short)), others)))
    almost = one_short(0)
    tapes.append(shuffled(almost + _random_tape(rng, max(0, LONG_RUN - len(almost)))))
    return tapes


def make_tests(criterion: Criterion, rng: random.Random) -> tuple[TestCase, ...]:
    """Corner tapes, pattern tapes and random top-ups, each judged by the reference matcher."""
    accepts = matcher(criterion)
    if criterion.family == "contains_count":
        specific = _count_tapes(rng, criterion.requirements)
    elif criterion.family == "contains_ordered":
        specific = _ordered_tapes(rng, criterion.pattern)
    else:
        specific = _substring_tapes(rng, criterion.pattern)
    tapes = list(dict.fromkeys(_corner_tapes(rng) + specific))
    seen = set(tapes)
    for wanted in (True, False):
        have = sum(accepts(t) == wanted for t in tapes)
        for attempt in range(TOP_UP_ATTEMPTS):
            if have >= MIN_EACH_VERDICT:
                break
            longest = min(1 + attempt // 10 + 1, MAX_TAPE_LENGTH)
            tape = _random_tape(rng, rng.randint(1, longest))
            if tape not in seen and accepts(tape) == wanted:
                seen.add(tape)
                tapes.append(tape)
                have += 1
    return tuple(TestCase(t, accepts(t)) for t in tapes[:MAX_CASES])


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
