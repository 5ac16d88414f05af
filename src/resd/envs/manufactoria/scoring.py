"""Judge a completion: extract the program, run every test robot, write judge-style feedback.

Follows the verifier the RESD paper trained Manufactoria-Has with (§4.1; App. G's sparse reward),
checked by a differential run (docs/environments.md):

- the program is the last ```manufactoria (or bare ```) block, trimmed, so code may start on
  the opening fence line; no block at all is a format error;
- a test case passes when the verdict is the expected one; a case that checks output
  (`check_output`, true when the record does not say) also needs the final tape to equal
  `expected_output` (a full regex match when it holds regex characters) for the robot to count
  as accepted; a case without `expected_accepted` expects acceptance;
- `acc` is the fraction of cases passed (paper: per-test-case accuracy); the reward is 1.0 only
  when every case passes (paper: per-task accuracy as reward), or `acc` in "pass_rate" mode;
- a program that does not parse counts as one failed case, as in the verifier;
- feedback shows only failing cases: a rejected robot that should pass (an error: routed to
  NONE, an unknown node, a loop) is shown alone as a runtime error with its trace; otherwise the
  two shortest wrong answers; nothing at all when everything passes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

from resd.envs.base import Outcome
from resd.envs.manufactoria.dsl import MAX_STEPS, ParseError, Program, RunResult, execute, parse
from resd.envs.text import MAX_COMPLETION_CHARS

RewardMode = Literal["all_pass", "pass_rate"]
REWARD_MODES: tuple[str, ...] = ("all_pass", "pass_rate")
FENCE = "```"
FENCE_TAG = "manufactoria"
TRACE_TAIL = 15
"""Trace entries shown for a runtime error (the last ones)."""
MAX_SHOWN_FAILURES = 2
"""Wrong answers shown when no runtime error is (the shortest first)."""
MAX_LINE_CHARS = 300
MAX_TAPE_CHARS = 250
MAX_FEEDBACK_CHARS = 2000
_REGEX_CHARS = set(".+*?|()")


def extract_program(completion: str) -> str | None:
    """The last ```manufactoria (or bare ```) block, trimmed; None if there is none.

    Pairs fences left to right (an opening fence, then the next ``` closes it), as the verifier's
    pattern does, in one linear pass whatever the text holds."""
    if not isinstance(completion, str):
        return None
    last: str | None = None
    pos = 0
    while True:
        opening = completion.find(FENCE, pos)
        if opening < 0:
            return last
        body = opening + len(FENCE)
        if completion.startswith(FENCE_TAG, body):
            body += len(FENCE_TAG)
        closing = completion.find(FENCE, body)
        if closing < 0:  # no fence after this one, so none after any later one either
            return last
        last = completion[body:closing].strip()
        pos = closing + len(FENCE)


def _output_matches(tape: str, expected: str) -> bool:
    if _REGEX_CHARS & set(expected):
        try:
            return re.fullmatch(expected, tape) is not None
        except re.error:
            return tape == expected
    return tape == expected


@dataclass(frozen=True)
class TestCase:
    """One test record, with the verifier's defaults for missing fields."""

    input: str
    expected_accepted: bool
    check_output: bool
    expected_output: str

    @classmethod
    def from_record(cls, case: Mapping[str, Any]) -> "TestCase":
        return cls(input=str(case.get("input", "") or ""),
                   expected_accepted=bool(case.get("expected_accepted", True)),
                   check_output=bool(case.get("check_output", True)),
                   expected_output=str(case.get("expected_output", "") or ""))


def case_passes(result: RunResult, case: TestCase) -> bool:
    """The verdict is the expected one; with `check_output`, acceptance also needs the right tape."""
    accepted = result.accepted
    if case.check_output:
        accepted = accepted and _output_matches(result.tape, case.expected_output)
    return accepted == case.expected_accepted


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _tape(tape: str) -> str:
    return _cut(tape, MAX_TAPE_CHARS) if tape else "(empty tape)"


def _detail_block(lines: list[str]) -> list[str]:
    # The verifier keeps only the first 10 of these lines, which cuts off the verdict whenever
    # the trace is longer than a few steps; we show them all (at most 15 trace steps).
    return ["", "Details", *(_cut(line, MAX_LINE_CHARS) for line in lines)]


def _trace_lines(trace: list[str]) -> list[str]:
    start = max(0, len(trace) - TRACE_TAIL)
    lines = [f"  ({start} earlier steps not shown)"] if start else []
    return lines + [f"  step {start + k + 1}: {node}" for k, node in enumerate(trace[start:])]


def _kind(program: Program, node_id: str) -> str:
    node = program.nodes.get(node_id)
    return node.kind if node else "?"


def _runtime_error(case: TestCase, result: RunResult, program: Program) -> str:
    front = result.front or "EMPTY"
    if result.error_kind == "loop":
        stuck = result.trace[-1]
        details = [f"Stuck at: {stuck} ({_kind(program, stuck)})", f"Front symbol: {front}"]
    else:
        details = ["Trace:", *_trace_lines(result.trace)]
        if result.trace[-1:] == ["NONE"] and len(result.trace) >= 2:
            router = result.trace[-2]
            details += [f"Rejected by: {router} ({_kind(program, router)}), front symbol: {front}"]
    details += [f"Final tape: '{result.tape}'"]
    if case.check_output:
        details.append(f"Expected tape: '{case.expected_output}'")
    details.append(f"Should be accepted: {case.expected_accepted}")
    return "\n".join(["Runtime Error", str(result.error), "", "Input", _tape(case.input), *_detail_block(details)])


def _wrong_answer(number: int, case: TestCase, result: RunResult) -> str:
    lines = [f"Test Case {number}: Wrong Answer", "", "Input", _tape(case.input),
             "", "Final tape", _tape(result.tape)]
    if case.expected_output:
        lines += ["", "Expected tape", _cut(case.expected_output, MAX_TAPE_CHARS)]
    details = ["Trace:", *_trace_lines(result.trace), f"Accepted: {result.accepted}",
               f"Should be accepted: {case.expected_accepted}"]
    return "\n".join(lines + _detail_block(details))


def failure_feedback(cases: Sequence[TestCase], results: Sequence[RunResult], passed: Sequence[bool],
                     program: Program) -> str:
    """Feedback on the failing cases in the verifier's shape ("" when none fails)."""
    failing = [i for i, ok in enumerate(passed) if not ok]
    errors = [i for i in failing if results[i].error]
    if errors:  # a rejected robot that should pass: shown alone, it usually explains the rest
        i = errors[0]
        text = _runtime_error(cases[i], results[i], program)
    else:
        shortest = sorted(failing, key=lambda i: len(cases[i].input) + len(results[i].tape))[:MAX_SHOWN_FAILURES]
        text = "\n\n".join(_wrong_answer(i + 1, cases[i], results[i]) for i in shortest)
    return text[:MAX_FEEDBACK_CHARS]


def score_program(code: str, tests: Sequence[Mapping[str, Any]], *, reward_mode: RewardMode = "all_pass",
                  max_steps: int = MAX_STEPS) -> Outcome:
    """Run every test case through a program (already extracted from the completion)."""
    cases = [TestCase.from_record(case) for case in tests]
    n = len(cases)
    program = parse(code)
    if isinstance(program, ParseError):
        # As in the verifier, a program that does not parse is one failed case (acc 0).
        return Outcome(0.0, 0.0, f"Parse Error\n{program}"[:MAX_FEEDBACK_CHARS], [False] * n,
                       {"error_kind": "parse", "parse_error": str(program), "error_line": program.line,
                        "program": code, "n_tests": n, "n_passed": 0})
    if n == 0:
        return Outcome(0.0, 0.0, "This task has no test cases, so nothing could be checked.", [],
                       {"error_kind": "no_tests", "program": code, "n_tests": 0, "n_passed": 0})
    results = [execute(program, case.input, max_steps) for case in cases]
    passed = [case_passes(r, case) for r, case in zip(results, cases)]
    n_passed = sum(passed)
    acc = n_passed / n
    solved = n_passed == n
    reward = (1.0 if solved else 0.0) if reward_mode == "all_pass" else acc
    failing = [i for i, ok in enumerate(passed) if not ok]
    kinds = {results[i].error_kind for i in failing}
    error_kind = None if solved else ("loop" if "loop" in kinds else "runtime" if "runtime" in kinds else "wrong")
    feedback = "" if solved else failure_feedback(cases, results, passed, program)
    return Outcome(reward, acc, feedback, passed,
                   {"error_kind": error_kind, "program": code, "n_tests": n, "n_passed": n_passed,
                    "failing_cases": [i + 1 for i in failing]})


FORMAT_FEEDBACK = "Incorrect Format: no ```manufactoria ... ``` block was found; put the whole factory in one."


def score_completion(completion: str, tests: Sequence[Mapping[str, Any]], *,
                     reward_mode: RewardMode = "all_pass", max_steps: int = MAX_STEPS) -> Outcome:
    """Judge raw model output. Never raises: a missing block is a format error with reward 0."""
    n = len(tests)
    if isinstance(completion, str) and len(completion) > MAX_COMPLETION_CHARS:
        return Outcome(0.0, 0.0, f"Incorrect Format: the answer is longer than {MAX_COMPLETION_CHARS} characters "
                                 f"and was not run.", [False] * n,
                       {"error_kind": "format", "program": None, "n_tests": n, "n_passed": 0})
    code = extract_program(completion)
    if code is None:
        return Outcome(0.0, 0.0, FORMAT_FEEDBACK, [False] * n,
                       {"error_kind": "format", "program": None, "n_tests": n, "n_passed": 0})
    return score_program(code, tests, reward_mode=reward_mode, max_steps=max_steps)
