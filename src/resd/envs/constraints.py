"""`constraints`: write about a topic while obeying 1-3 checkable rules.

The CPU-scale task. Each prompt asks for a short text about a topic plus one to three rules
from a catalogue (a keyword, a length, lowercase only, a final "!", a bullet list, ...). Every
rule has a pure checker, so the feedback names each rule with PASS/FAIL and the reason.
`acc` is the fraction of rules satisfied; the reward is 1 only when all are (binary all-pass,
as in the paper's tasks), or `acc` itself with `reward="fraction"`.

Why this task: SmolLM2-135M-Instruct succeeds only sometimes (measured at T=1.0, one rule,
8 samples: "blue" 5/8, fewer than 20 words 3/8, lowercase/ALL CAPS/ends with "!"/quotes 0/8),
so easy rules (keywords, length) are drawn more often than hard ones and most prompts carry one
or two rules: a rare-success regime where feedback-driven methods have something to learn.

Tasks are generated from a seed, so the same options always give the same tasks.
"""

from __future__ import annotations

import random
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Callable

from resd.envs.base import Environment, Outcome, Split, Task, clip_feedback
from resd.envs.text import printable, strip_reasoning
from resd.errors import UserError

Params = dict[str, Any]
Check = tuple[bool, str]  # (passed, why)

TOPICS = (
    "the ocean", "a rainy day", "cats", "the moon", "trains", "a library", "winter", "coffee",
    "mountains", "a birthday party", "bicycles", "a forest", "music", "friendship",
    "the city at night", "gardening", "robots", "the desert", "a lighthouse", "breakfast",
    "the sun", "school", "a thunderstorm", "dogs", "space travel", "an old bridge",
    "autumn leaves", "a quiet morning", "chess", "a market", "painting", "honey bees", "a river",
    "snow", "the weekend", "a museum", "kites", "volcanoes", "a train station", "summer holidays",
)
KEYWORDS = ("blue", "river", "quiet", "bright", "garden", "silver", "morning", "friend", "music",
            "green", "simple", "happy", "window", "light", "warm", "stone")
START_WORDS = ("Today", "Imagine", "Every", "Sometimes", "Yes", "Look", "Honestly", "Once")
AVOID_WORDS = ("the", "and", "is", "a")
ONE_SENTENCE_FORMS = ("Write one sentence about {topic}.", "Write a single sentence describing {topic}.",
                      "In one sentence, tell me about {topic}.")
FREE_FORMS = ("Write about {topic}.", "Write a short text about {topic}.", "Describe {topic}.")
LIST_FORMS = ("List a few things about {topic}.", "Give some short facts about {topic}.")


MAX_TASKS = 100_000
"""Most prompts per split: the catalogue has fewer distinct prompts than a much larger request
would need, and every task is held in memory."""

# --- text helpers (pure) ---------------------------------------------------------------------

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")  # letters and digits of any script
_BULLET = re.compile(r"^\s*(?:[-*•])\s+\S")

COMMAS = frozenset(
    ",\u055d\u060c\u07f8\u1363\u1802\u1808\u201a\u201e\u2e32\u2e34\u2e41\u2e49\u2e4c\u3001\ua4fe\ua60d"
    "\ua6f5\ufe10\ufe11\ufe50\ufe51\uff0c\uff64\U0001144d\U0001145a\U00016e97\U0001da87")
"""What a reader sees as a comma: every punctuation character Unicode names a comma (fullwidth,
small, ideographic, Arabic, ...) and the low-9 quotation marks ‚ „ that are drawn like one."""


def as_read(text: str) -> str:
    """The text a person reads: compatibility forms folded (NFKC: fullwidth letters, ligatures),
    invisible format characters (zero-width spaces and joiners, bidi controls) and combining marks
    dropped, so neither can split one visible word into several."""
    if text.isascii():
        return text
    folded = unicodedata.normalize("NFKC", text)
    return "".join(c for c in folded if unicodedata.category(c) != "Cf" and not unicodedata.category(c).startswith("M"))


def words(text: str) -> list[str]:
    """The words a person counts: runs of letters or digits of any script (homoglyphs of Latin
    letters included), with inner apostrophes."""
    return _WORD.findall(as_read(text))


def count_sentences(text: str) -> int:
    """Pieces between ., ! and ? that contain a letter or digit (a missing final stop still counts)."""
    return sum(1 for piece in re.split(r"[.!?]+", as_read(text)) if re.search(r"[^\W_]", piece))


def _quote_list(items: list[str], limit: int = 3) -> str:
    shown = ", ".join(f'"{w}"' for w in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _occurrences(text: str, word: str) -> int:
    return len(re.findall(rf"(?<![^\W_]){re.escape(word)}(?![^\W_])", as_read(text), re.IGNORECASE))


def _last_char(text: str) -> str:
    return text[-1] if text else ""


# --- the catalogue -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    """One kind of constraint.

    tags:   aspects of the text it fixes; two rules sharing a tag never go in one prompt, so
            every prompt is satisfiable (e.g. lowercase vs ALL CAPS, quotes vs final "!").
    weight: how often it is drawn (easy rules more often; see the module docstring).
    """

    kind: str
    tags: frozenset[str]
    weight: float
    sample: Callable[[random.Random], Params]
    describe: Callable[[Params], str]
    check: Callable[[str, Params], Check]


def _check_keyword(text: str, p: Params) -> Check:
    n, need = _occurrences(text, p["word"]), p.get("times", 1)
    if n >= need:
        return True, f'"{p["word"]}" appears {n} time{"s" * (n != 1)}'
    return False, f'"{p["word"]}" appears {n} time{"s" * (n != 1)}, needs {need}'


def _check_max_words(text: str, p: Params) -> Check:
    n = len(words(text))
    return (n < p["n"]), f"{n} words (must be fewer than {p['n']})"


def _check_min_words(text: str, p: Params) -> Check:
    n = len(words(text))
    return (n >= p["n"]), f"{n} words (needs at least {p['n']})"


def _check_lowercase(text: str, p: Params) -> Check:
    bad = [w for w in text.split() if any(c.isupper() for c in w)]
    return (not bad), ("no capital letters" if not bad else f"capital letters in {_quote_list(bad)}")


def _check_uppercase(text: str, p: Params) -> Check:
    bad = [w for w in text.split() if any(c.islower() for c in w)]
    return (not bad), ("all letters are capitals" if not bad else f"lowercase letters in {_quote_list(bad)}")


def _check_ending(text: str, p: Params) -> Check:
    last = _last_char(text)
    return (last == p["mark"]), f'the response ends with "{last}"'


def _check_quotes(text: str, p: Params) -> Check:
    ok = len(text) >= 2 and text[0] in "\"“" and text[-1] in "\"”"
    return ok, f'it starts with "{text[:1]}" and ends with "{_last_char(text)}"'


def _check_start(text: str, p: Params) -> Check:
    found = words(text)
    first = found[0] if found else ""
    return (first.lower() == p["word"].lower()), f'the first word is "{first}"'


def _check_no_commas(text: str, p: Params) -> Check:
    n = sum(1 for c in text if c in COMMAS)
    return (n == 0), ("no commas" if n == 0 else f"{n} comma{'s' * (n != 1)} found")


def _check_number(text: str, p: Params) -> Check:
    found = re.findall(r"\d+", text)
    return bool(found), (f'found the number "{found[0]}"' if found else "no digits found")


def _check_sentences(text: str, p: Params) -> Check:
    n = count_sentences(text)
    return (n == p["n"]), f"{n} sentence{'s' * (n != 1)} counted (sentences end with . ! or ?)"


def _check_bullets(text: str, p: Params) -> Check:
    n = sum(1 for line in text.splitlines() if _BULLET.match(line))
    return (n == p["n"]), f'{n} bullet point{"s" * (n != 1)} (lines starting with "- ")'


def _check_avoid(text: str, p: Params) -> Check:
    n = _occurrences(text, p["word"])
    return (n == 0), (f'"{p["word"]}" not used' if n == 0 else f'"{p["word"]}" used {n} time{"s" * (n != 1)}')


RULES: dict[str, Rule] = {r.kind: r for r in [
    Rule("keyword", frozenset({"keyword"}), 3.0, lambda rng: {"word": rng.choice(KEYWORDS)},
         lambda p: f'Include the word "{p["word"]}".', _check_keyword),
    Rule("keyword_twice", frozenset({"keyword"}), 1.0, lambda rng: {"word": rng.choice(KEYWORDS), "times": 2},
         lambda p: f'Use the word "{p["word"]}" at least twice.', _check_keyword),
    Rule("max_words", frozenset({"length"}), 2.5, lambda rng: {"n": rng.choice((12, 15, 20, 25))},
         lambda p: f"Use fewer than {p['n']} words.", _check_max_words),
    Rule("min_words", frozenset({"length"}), 1.5, lambda rng: {"n": rng.choice((8, 10, 12, 15))},
         lambda p: f"Use at least {p['n']} words.", _check_min_words),
    Rule("no_commas", frozenset({"commas"}), 1.5, lambda rng: {},
         lambda p: "Do not use any commas.", _check_no_commas),
    Rule("number", frozenset({"number"}), 1.0, lambda rng: {},
         lambda p: "Include at least one number written in digits (like 7).", _check_number),
    Rule("starts_with", frozenset({"start"}), 1.0, lambda rng: {"word": rng.choice(START_WORDS)},
         lambda p: f'Start your response with the word "{p["word"]}".', _check_start),
    Rule("avoid_word", frozenset({"avoid"}), 0.8, lambda rng: {"word": rng.choice(AVOID_WORDS)},
         lambda p: f'Do not use the word "{p["word"]}".', _check_avoid),
    Rule("lowercase", frozenset({"case"}), 0.6, lambda rng: {},
         lambda p: "Write everything in lowercase letters, with no capital letters at all.", _check_lowercase),
    Rule("uppercase", frozenset({"case"}), 0.6, lambda rng: {},
         lambda p: "Write everything in capital letters.", _check_uppercase),
    Rule("ends_with", frozenset({"end"}), 0.8, lambda rng: {"mark": rng.choice("!?")},
         lambda p: f'End your response with "{p["mark"]}".', _check_ending),
    Rule("quotes", frozenset({"start", "end", "wrap"}), 0.6, lambda rng: {},
         lambda p: "Wrap your entire response in double quotation marks.", _check_quotes),
    Rule("sentences", frozenset({"shape"}), 0.8, lambda rng: {"n": rng.choice((2, 3))},
         lambda p: f"Write exactly {p['n']} sentences.", _check_sentences),
    Rule("bullets", frozenset({"shape", "start", "end", "wrap"}), 0.6, lambda rng: {"n": rng.choice((2, 3, 4))},
         lambda p: f'Answer with exactly {p["n"]} bullet points, each on its own line starting with "- ".',
         _check_bullets),
]}
CONSTRAINT_COUNT_WEIGHTS = {1: 0.5, 2: 0.4, 3: 0.1}
"""How many rules a prompt gets: mostly one or two (see the module docstring)."""


def sample_constraints(rng: random.Random, max_constraints: int = 3,
                       kinds: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Draw 1..max_constraints rules with no shared tags, each with its parameters (only rules
    of the given `kinds` when set)."""
    counts = [c for c in CONSTRAINT_COUNT_WEIGHTS if c <= max_constraints]
    count = rng.choices(counts, weights=[CONSTRAINT_COUNT_WEIGHTS[c] for c in counts])[0]
    allowed = [r for r in RULES.values() if kinds is None or r.kind in kinds]
    chosen: list[Rule] = []
    used: set[str] = set()
    while len(chosen) < count:
        pool = [r for r in allowed if not (r.tags & used)]
        if not pool:
            break
        rule = rng.choices(pool, weights=[r.weight for r in pool])[0]
        chosen.append(rule)
        used |= rule.tags
    return [{"kind": r.kind, "params": r.sample(rng)} for r in chosen]


def render_prompt(topic: str, constraints: list[dict[str, Any]], form_index: int) -> str:
    kinds = {c["kind"] for c in constraints}
    forms = LIST_FORMS if "bullets" in kinds else FREE_FORMS if "sentences" in kinds else ONE_SENTENCE_FORMS
    head = forms[form_index % len(forms)].format(topic=topic)
    rules = " ".join(RULES[c["kind"]].describe(c["params"]) for c in constraints)
    return f"{head} {rules}"


def check_all(text: str, constraints: list[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    """(description, passed, why) for each constraint, on the answer part of `text`."""
    answer = strip_reasoning(text)
    results = []
    for c in constraints:
        rule = RULES[c["kind"]]
        if not answer:
            results.append((rule.describe(c["params"]), False, "the response is empty"))
        else:
            passed, why = rule.check(answer, c["params"])
            results.append((rule.describe(c["params"]), passed, why))
    return results


# --- a constructive reference answer -----------------------------------------------------------

_FILLER = ("it", "feels", "calm", "to", "me", "on", "many", "days", "with", "good", "people",
           "around", "so", "we", "smile", "often")


def reference_answer(constraints: list[dict[str, Any]]) -> str:
    """A text that satisfies every rule of a prompt (used by `resd env show` and the tests)."""
    p = {c["kind"]: c["params"] for c in constraints}
    avoid = p.get("avoid_word", {}).get("word", "").lower()
    filler = [w for w in _FILLER if w != avoid]
    pieces = 1
    if "sentences" in p:
        pieces = p["sentences"]["n"]
    if "bullets" in p:
        pieces = p["bullets"]["n"]
    head = [p["starts_with"]["word"]] if "starts_with" in p else []
    core: list[str] = []
    for kind in ("keyword", "keyword_twice"):
        if kind in p:
            core += [p[kind]["word"]] * p[kind].get("times", 1)
    if "number" in p:
        core.append("7")
    low = p.get("min_words", {}).get("n", 1)
    high = p.get("max_words", {}).get("n", 10**6) - 1
    target = min(max(low, len(head) + len(core) + 2 * pieces, 6), high)
    fill = [filler[i % len(filler)] for i in range(max(0, target - len(head) - len(core)))]
    body = head + fill[:3] + core + fill[3:]
    # Split the words into `pieces` chunks of at least one word each.
    size, extra = divmod(len(body), pieces)
    chunks, at = [], 0
    for i in range(pieces):
        n = size + (1 if i < extra else 0)
        chunks.append(body[at:at + n])
        at += n
    end = p.get("ends_with", {}).get("mark", ".")
    if "bullets" in p:
        text = "\n".join("- " + " ".join(chunk) for chunk in chunks)
    else:
        sentences = [" ".join(chunk) for chunk in chunks]
        sentences = [s[:1].upper() + s[1:] for s in sentences]
        text = ". ".join(sentences) + end
    if "lowercase" in p:
        text = text.lower()
    if "uppercase" in p:
        text = text.upper()
    if "quotes" in p:
        text = f'"{text}"'
    return text


# --- the environment -----------------------------------------------------------------------------

class ConstraintsEnv(Environment):
    """Short texts under 1-3 checkable rules; feedback lists each rule with PASS/FAIL and why.

    Options: train_size (512), test_size (128), seed (0), max_constraints (3),
    reward ("all_pass": 1 only if every rule passes; "fraction": the fraction passed),
    rules (None = the whole catalogue; or a list of rule kinds, e.g. [max_words], to study one skill).
    """

    name = "constraints"
    description = "write about a topic under 1-3 checkable rules (keyword, length, case, ending, list...)"

    def __init__(self, train_size: int = 512, test_size: int = 128, seed: int = 0,
                 max_constraints: int = 3, reward: str = "all_pass", rules: list[str] | None = None):
        if reward not in ("all_pass", "fraction"):
            raise UserError(f"constraints: reward must be 'all_pass' or 'fraction', not {reward!r}")
        if not 1 <= int(max_constraints) <= 3:
            raise UserError(f"constraints: max_constraints must be 1, 2 or 3, not {max_constraints!r}")
        if not (0 <= int(train_size) <= MAX_TASKS and 0 <= int(test_size) <= MAX_TASKS):
            raise UserError(f"constraints: train_size and test_size must be in [0, {MAX_TASKS}] "
                            f"(got {train_size} and {test_size})")
        if rules is not None:
            if isinstance(rules, str) or not rules or any(k not in RULES for k in rules):
                raise UserError(f"constraints: rules must be a non-empty list of rule kinds from "
                                f"{', '.join(RULES)}; got {rules!r}")
        self.rules = tuple(rules) if rules is not None else None
        self.train_size, self.test_size = int(train_size), int(test_size)
        self.seed, self.max_constraints, self.reward = int(seed), int(max_constraints), reward
        self._cache: dict[str, list[Task]] = {}

    def tasks(self, split: Split) -> list[Task]:
        if split not in ("train", "test"):
            raise UserError(f"split must be 'train' or 'test', not {split!r}")
        if split not in self._cache:
            # Test prompts never repeat a training prompt word for word.
            seen = {t.prompt_text for t in self.tasks("train")} if split == "test" else set()
            size = self.train_size if split == "train" else self.test_size
            self._cache[split] = self._generate(split, size, seen)
        return self._cache[split]

    def _generate(self, split: str, size: int, exclude: set[str]) -> list[Task]:
        rng = random.Random(f"resd-constraints/{self.seed}/{split}")
        out: list[Task] = []
        misses = 0
        while len(out) < size:
            if misses > 10_000:  # a narrow `rules` choice has fewer distinct prompts than asked for
                raise UserError(f"constraints: only {len(out)} distinct {split} prompts exist with rules="
                                f"{list(self.rules or [])!r}; lower {split}_size")
            topic = rng.choice(TOPICS)
            constraints = sample_constraints(rng, self.max_constraints, self.rules)
            text = render_prompt(topic, constraints, rng.randrange(6))
            if text in exclude:
                misses += 1
                continue
            misses = 0
            exclude.add(text)
            out.append(Task(id=f"constraints-{split}-{len(out):04d}",
                            prompt=[{"role": "user", "content": text}],
                            meta={"topic": topic, "constraints": constraints}))
        return out

    def score(self, task: Task, completion: str) -> Outcome:
        constraints = task.meta["constraints"]
        results = check_all(completion, constraints)
        passed = [ok for _, ok, _ in results]
        acc = sum(passed) / len(passed) if passed else 0.0
        reward = acc if self.reward == "fraction" else float(all(passed))
        lines = [f"{sum(passed)} of {len(passed)} constraints satisfied."]
        lines += [f"[{'PASS' if ok else 'FAIL'}] {desc} ({why})" for desc, ok, why in results]
        # The feedback quotes the answer's words: no terminal escapes or control characters survive.
        return Outcome(reward=reward, acc=acc, feedback=clip_feedback(printable("\n".join(lines))), passed=passed,
                       details={"kinds": [c["kind"] for c in constraints],
                                "n_words": len(words(strip_reasoning(completion)))})

    def reference_solution(self, task: Task) -> str | None:
        return reference_answer(task.meta["constraints"])
