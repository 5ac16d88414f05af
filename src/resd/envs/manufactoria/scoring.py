"""Judge a completion: extract the program, run every test robot, write judge-style feedback.

Follows the RESD verifier's rules (notes §1 "Scoring in RESD"): the answer is the last
```manufactoria (or bare ```) block; `acc` is the fraction of test cases whose verdict matches
(paper: per-test-case accuracy); the reward is 1.0 only when every case passes (paper: per-task
accuracy as reward), or the pass rate in "pass_rate" mode. Feedback shows errors first, then at
most two failing cases with their trace tail, capped at 2000 characters.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Mapping, Sequence

from resd.envs.base import Outcome, clip_feedback
from resd.envs.manufactoria.dsl import MAX_STEPS, ParseError, RunResult, execute, parse

RewardMode = Literal["all_pass", "pass_rate"]
REWARD_MODES: tuple[str, ...] = ("all_pass", "pass_rate")
CODE_BLOCK = re.compile(r"```(?:manufactoria)?(.*?)```", re.DOTALL)
TRACE_TAIL = 15
MAX_SHOWN_FAILURES = 2
_REGEX_CHARS = set(".+*?|()")


def extract_program(completion: str) -> str | None:
    """The last ```manufactoria (or bare ```) block, without the fence line; None if there is none."""
    if not isinstance(completion, str):
        return None
    blocks = CODE_BLOCK.findall(completion)
    if not blocks:
        return None
    code = blocks[-1]
    # Drop the rest of the opening fence line so that line numbers count from the program's first line.
    return code[1:] if code.startswith("\n") else code


def _output_matches(tape: str, expected: str) -> bool:
    if _REGEX_CHARS & set(expected):
        try:
            return re.fullmatch(expected, tape) is not None
        except re.error:
            return tape == expected
    return tape == expected


def case_passes(result: RunResult, case: Mapping[str, Any]) -> bool:
    """A case passes when the verdict is the expected one (and the tape, if the case checks output)."""
    expected = bool(case.get("expected_accepted", False))
    if case.get("check_output"):
        return (result.accepted and _output_matches(result.tape, str(case.get("expected_output", "")))) == expected
    return result.accepted == expected


def _show_tape(tape: str) -> str:
    return f'"{tape}"' + (" (empty tape)" if not tape else "")


def _verdict(accepted: bool) -> str:
    return "accepted" if accepted else "rejected"


def _describe_failure(number: int, case: Mapping[str, Any], result: RunResult) -> str:
    expected = bool(case.get("expected_accepted", False))
    tail = result.trace[-TRACE_TAIL:]
    trace = " -> ".join(tail) if tail else "(no node visited)"
    if len(result.trace) > TRACE_TAIL:
        trace = f"... -> {trace}  (last {TRACE_TAIL} of {len(result.trace)} visits)"
    front = _show_tape(result.front) if result.front else "empty tape"
    lines = [f"Test Case {number}: " + ("Runtime Error" if result.error else "Wrong Answer"),
             f"Input: {_show_tape(str(case.get('input', '')))}"]
    if result.error:
        lines.append(f"Error: {result.error}")
    lines += [f"Your factory: {_verdict(result.accepted)}", f"Expected: {_verdict(expected)}"]
    if case.get("check_output"):
        lines.append(f"Expected tape: {case.get('expected_output', '')!r}; final tape: {result.tape!r}")
    lines.append(f"Trace: {trace}")
    if result.accepted:
        lines.append("Why: the robot reached `end`, but this tape must be rejected.")
    elif result.error_kind == "loop":
        lines.append(f"Stuck: still moving at node {result.stopped_at!r} (front: {front}); "
                     f"the robot never reached `end` or a rejection.")
    else:
        lines.append(f"Why: {result.reason}.")
    return "\n".join(lines)


def score_program(code: str, tests: Sequence[Mapping[str, Any]], *, reward_mode: RewardMode = "all_pass",
                  max_steps: int = MAX_STEPS) -> Outcome:
    """Run every test case through a program (already extracted from the completion)."""
    n = len(tests)
    program = parse(code)
    if isinstance(program, ParseError):
        feedback = (f"Parse Error: {program}\n"
                    f"The factory did not compile, so none of the {n} test cases could run. "
                    f"Fix this line and check the rest of the program against the language rules.")
        return Outcome(0.0, 0.0, clip_feedback(feedback), [False] * n,
                       {"error_kind": "parse", "parse_error": str(program), "error_line": program.line,
                        "program": code, "n_tests": n, "n_passed": 0})

    results = [execute(program, str(case.get("input", "")), max_steps) for case in tests]
    passed = [case_passes(r, case) for r, case in zip(results, tests)]
    n_passed = sum(passed)
    acc = n_passed / n if n else 0.0
    solved = n > 0 and n_passed == n
    reward = (1.0 if solved else 0.0) if reward_mode == "all_pass" else acc

    failing = [i for i, ok in enumerate(passed) if not ok]
    # Errors (infinite loops, unknown nodes) first: they usually explain the wrong answers too.
    failing.sort(key=lambda i: (results[i].error is None, i))
    kinds = {results[i].error_kind for i in failing}
    error_kind = None if solved else ("loop" if "loop" in kinds else "runtime" if "runtime" in kinds else "wrong")
    if n == 0:
        feedback, error_kind = "This task has no test cases, so nothing could be checked.", "wrong"
    elif solved:
        feedback = f"Accepted: all {n} test cases passed."
    else:
        shown = [_describe_failure(i + 1, tests[i], results[i]) for i in failing[:MAX_SHOWN_FAILURES]]
        more = len(failing) - len(shown)
        feedback = (f"Passed {n_passed}/{n} test cases.\n\n" + "\n\n".join(shown)
                    + (f"\n\n({more} more failing test case{'s' if more > 1 else ''} not shown.)" if more else ""))
    return Outcome(reward, acc, clip_feedback(feedback), passed,
                   {"error_kind": error_kind, "program": code, "n_tests": n, "n_passed": n_passed,
                    "failing_cases": [i + 1 for i in sorted(failing)]})


def score_completion(completion: str, tests: Sequence[Mapping[str, Any]], *,
                     reward_mode: RewardMode = "all_pass", max_steps: int = MAX_STEPS) -> Outcome:
    """Judge raw model output. Never raises: a missing block is a format error with reward 0."""
    code = extract_program(completion)
    if code is None:
        feedback = ("Incorrect format: no ```manufactoria code block was found, so nothing was run. "
                    "Write the complete factory program inside one ```manufactoria ... ``` block.")
        return Outcome(0.0, 0.0, feedback, [False] * len(tests),
                       {"error_kind": "format", "program": None, "n_tests": len(tests), "n_passed": 0})
    return score_program(code, tests, reward_mode=reward_mode, max_steps=max_steps)
