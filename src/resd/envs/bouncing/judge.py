"""BouncingSim scoring as pure functions: find the program, refuse forbidden code, judge results,
write feedback.

The rules follow the official verifier (horizon-llm/RESD `feedback/bouncingsim.py`, read, not
used): the program is the last fenced block of the whole completion; each timestamp is one test
"mean distance between predicted and true centres, rounded to 3 decimals, <= 50"; feedback
starts with the pass count, the pass/fail boundary in t and whether the error grows, then shows
the first failing test that crashed or timed out alone, or else up to three wrong answers with
every object's predicted and true position; it is empty when everything passes. Running the
program is the environment's job (`resd.envs.bouncingsim`); everything here is deterministic and
side-effect free, so it can be tested on hand-made harness results.
"""

from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass
from typing import Any

from resd.envs.base import FEEDBACK_LIMIT, Outcome
from resd.envs.bouncing.prompt import ALLOWED_IMPORTS, CALL_TIME_LIMIT

# Built-ins that would give the program I/O or a way around the import rule.
FORBIDDEN_CALLS = ("__import__", "open", "exec", "eval", "compile", "input", "breakpoint")
INTROSPECTION = frozenset({"f_back", "f_globals", "f_locals", "tb_frame", "gi_frame", "cr_frame", "__globals__",
                           "__subclasses__", "__traceback__", "__builtins__", "__code__", "__closure__"})
"""Names that reach the judge's own frames from inside the program (to forge a result). The
program shares an interpreter with the harness, so this raises the bar; it is not a proof."""
MAX_WRONG_SHOWN = 3
"""Wrong answers shown in feedback (the official verifier's max_tests_to_show)."""
GROWTH_FACTOR = 2.0
"""The error "grows with time" when the last wrong answer's distance is over twice the first's."""
MISSED_BOUNCE_FAR, MISSED_BOUNCE_NEAR = 100.0, 10.0
"""A wrong answer with one object off by more than FAR and another within NEAR suggests that
some objects missed a wall (the official verifier's hint rule)."""
SHOWN_CHARS = 400
"""Longest test description, error message or output line shown."""
FENCE = "```"


def extract_program(completion: str) -> str | None:
    """The program: the text of the last fenced block of the whole completion, the reasoning
    included, fences paired from the left (the official verifier's rule). A leading `python`
    tag is dropped; None when there is no closed block or it is blank."""
    pieces = completion.split(FENCE)
    enclosed = pieces[1:-1:2]  # between fences 1-2, 3-4, ...; an unpaired last fence closes nothing
    if not enclosed:
        return None
    body = enclosed[-1]
    if body.startswith("python"):
        body = body[len("python"):]
    body = body.strip()
    return body or None


def static_problems(program: str) -> str | None:
    """Why the program is refused before running it (syntax, forbidden imports/calls), or None."""
    try:
        tree = ast.parse(program)
    except SyntaxError as exc:
        line = (exc.text or "").rstrip()
        return f"SyntaxError: {exc.msg} (line {exc.lineno}){': ' + line.strip() if line else ''}"
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, surrogates, absurd nesting
        return f"SyntaxError: the program cannot be parsed ({type(exc).__name__})"
    for node in ast.walk(tree):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or "." * node.level]
        for module in modules:
            if module.split(".")[0] not in ALLOWED_IMPORTS:
                return (f"the program imports {module!r} (line {node.lineno}); only "
                        f"{', '.join(ALLOWED_IMPORTS)} may be imported")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS:
            return f"the program calls {node.func.id}() (line {node.lineno}), which is not allowed"
        name = (node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name)
                else node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None)
        if name in INTROSPECTION:
            return f"the program uses {name!r} (line {node.lineno}); interpreter introspection is not allowed"
    return None


def parse_results(payload: str, n_times: int, n_objects: int) -> list[dict[str, Any]] | None:
    """The harness's result line, checked: one {"status": ...} per timestamp and, for "ok", a
    list of finite [x, y] pairs (a wrong count is the judge's to report, up to 4 x `n_objects`).
    None for anything else (the program may have printed a forged line); never raises."""
    try:
        parsed = json.loads(payload)
    except (ValueError, RecursionError, MemoryError):
        return None
    if not isinstance(parsed, list) or len(parsed) != n_times:
        return None
    clean = []
    for item in parsed:
        if not isinstance(item, dict) or not isinstance(item.get("status"), str):
            return None
        if item["status"] != "ok":
            clean.append({"status": item["status"][:40], "message": str(item.get("message", ""))[:800]})
            continue
        value = item.get("value")
        if not (isinstance(value, list) and len(value) <= 4 * n_objects and all(
                isinstance(p, list) and len(p) == 2 and all(
                    isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in p)
                for p in value)):
            return None
        clean.append({"status": "ok", "value": [[float(x), float(y)] for x, y in value]})
    return clean


@dataclass(frozen=True)
class Check:
    """The verdict on one timestamp (one test)."""

    t: float
    expected: tuple[tuple[float, float], ...]
    tolerance: float
    passed: bool
    distance: float | None = None
    """Mean distance over objects, rounded to 3 decimals; None when there was no usable answer."""
    predicted: tuple[tuple[float, float], ...] = ()
    problem: str = ""
    """Why there is no usable answer: "error: ...", "timeout: ..." or "refused: ..."."""

    @property
    def crashed(self) -> bool:
        return self.distance is None


def check_distance(predicted: list[list[float]], expected: list[list[float]]) -> float:
    """Mean Euclidean distance between corresponding objects, rounded to 3 decimals."""
    return round(sum(math.dist(p, q) for p, q in zip(predicted, expected, strict=True)) / len(expected), 3)


def check_tests(tests: list[dict[str, Any]], results: list[dict[str, Any]]) -> list[Check]:
    """Compare each harness result with its test's expected positions."""
    checks = []
    for test, result in zip(tests, results, strict=True):
        expected = tuple((float(x), float(y)) for x, y in test["expected"])
        base = {"t": float(test["t"]), "expected": expected, "tolerance": float(test["tolerance"])}
        status = result.get("status")
        if status != "ok":
            kind = "timeout" if status == "timeout" else "error"
            checks.append(Check(**base, passed=False, problem=f"{kind}: {result.get('message', '')}".strip()))
            continue
        value = result["value"]
        if not value or len(value) != len(expected):
            checks.append(Check(**base, passed=False, problem=(
                f"error: predict_position returned {len(value)} positions for {len(expected)} balls")))
            continue
        distance = check_distance(value, [list(p) for p in expected])
        checks.append(Check(**base, passed=distance <= base["tolerance"], distance=distance,
                            predicted=tuple((p[0], p[1]) for p in value)))
    return checks


def refused_checks(tests: list[dict[str, Any]], reason: str) -> list[Check]:
    """Every test failed with the same reason (the program was not run)."""
    return [Check(t=float(test["t"]), expected=tuple((float(x), float(y)) for x, y in test["expected"]),
                  tolerance=float(test["tolerance"]), passed=False, problem=f"refused: {reason}") for test in tests]


def _clip(text: str, limit: int = SHOWN_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _coords(p: tuple[float, float]) -> str:
    return f"[{p[0]!r}, {p[1]!r}]"


def _test_line(check: Check) -> str:
    expected = "[" + ", ".join(_coords(p) for p in check.expected) + "]"
    return _clip(f"mean distance of predict_position({check.t:.2f}) from {expected} must be <= {check.tolerance:g}")


def _summary(checks: list[Check], first_shown: int) -> list[str]:
    """Pass count, where passing stops, and whether wrong answers get worse with time."""
    passing = [c.t for c in checks if c.passed]
    failing = [c.t for c in checks if not c.passed]
    lines = [f"{len(passing)} of {len(checks)} tests passed."]
    if passing and failing:
        lines.append(f"Latest passing time t = {max(passing):.2f}; earliest failing time t = {min(failing):.2f} "
                     f"(test {first_shown + 1}).")
    wrong = sorted((c.t, c.distance) for c in checks if not c.passed and c.distance is not None)
    if len(wrong) >= 2 and wrong[-1][1] > GROWTH_FACTOR * wrong[0][1]:
        lines.append(f"The error grows with time (mean distance {wrong[0][1]:.0f} at t = {wrong[0][0]:.2f}, "
                     f"{wrong[-1][1]:.0f} at t = {wrong[-1][0]:.2f}): contacts or bounces are probably "
                     f"handled wrongly.")
    return lines


def _crash_block(index: int, check: Check) -> list[str]:
    kind, _, message = check.problem.partition(": ")
    if kind == "timeout":
        title = "Time limit exceeded"
        message = (f"predict_position({check.t:.2f}) did not return within {CALL_TIME_LIMIT:g} s ({message}); "
                   f"look for a loop that never ends, e.g. in the contact handling.")
    elif kind == "refused":
        title = "Not run"
    else:
        title = "Runtime error"
    return [f"Test {index + 1}: {title}", _clip(message, 4 * SHOWN_CHARS), "", f"Input: t = {check.t:.2f}",
            f"Test: {_test_line(check)}"]


def _wrong_block(index: int, check: Check) -> list[str]:
    assert check.distance is not None
    lines = [f"Test {index + 1}: wrong answer",
             f"mean distance {check.distance:.3f}, allowed {check.tolerance:g}", "", f"Input: t = {check.t:.2f}",
             "Per ball:"]
    offsets = [math.dist(p, q) for p, q in zip(check.predicted, check.expected, strict=True)]
    for i, (p, q, d) in enumerate(zip(check.predicted, check.expected, offsets, strict=True), start=1):
        lines.append(_clip(f"Ball {i}: {d:.1f} away (predicted {_coords(p)}, true {_coords(q)})"))
    if max(offsets) > MISSED_BOUNCE_FAR and min(offsets) < MISSED_BOUNCE_NEAR:
        lines += ["", "Hint: some balls are almost exactly right while others are far off, which usually means "
                      "those balls went through a wall instead of bouncing. Test every ball against every "
                      "container edge, and check that the contact point lies on the edge segment itself."]
    return lines


def feedback_text(checks: list[Check]) -> str:
    """Judge-style feedback ("" when every test passes), at most FEEDBACK_LIMIT characters."""
    failing = [i for i, c in enumerate(checks) if not c.passed]
    if not failing:
        return ""
    crashed = [i for i in failing if checks[i].crashed]
    shown = crashed[:1] if crashed else failing[:MAX_WRONG_SHOWN]
    lines = _summary(checks, shown[0]) + [""]
    for i in shown:
        lines += (_crash_block if checks[i].crashed else _wrong_block)(i, checks[i]) + [""]
    return "\n".join(lines).rstrip()[:FEEDBACK_LIMIT]


NO_PROGRAM_FEEDBACK = "No program found: put the complete program in a ```python ... ``` code block."


def outcome(checks: list[Check], reward_mode: str) -> Outcome:
    passed = [c.passed for c in checks]
    acc = sum(passed) / len(passed) if passed else 0.0
    reward = acc if reward_mode == "fraction" else float(bool(passed) and all(passed))
    return Outcome(reward=reward, acc=acc, feedback=feedback_text(checks), passed=passed,
                   details={"distances": [c.distance for c in checks], "problems": [c.problem for c in checks],
                            "timestamps": [c.t for c in checks]})


def no_program(n_tests: int, reason: str = NO_PROGRAM_FEEDBACK) -> Outcome:
    """An Outcome for a completion without a program (or one too long to parse)."""
    return Outcome(reward=0.0, acc=0.0, feedback=reason, passed=[False] * n_tests,
                   details={"error": "format", "reason": reason})
