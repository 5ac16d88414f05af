"""`code`: write a Python program; a judge runs it on hidden tests in the sandbox.

Problems come with stdin/stdout tests or function-call tests. The judge's feedback is what a
programming contest judge says: the first runtime error (short traceback and the input), else
a time limit (and the input), else up to two wrong answers, shortest input first, with input,
output and expected output. `acc` is the fraction of tests passed; the reward is 1 only when
all pass (or `acc` with `reward="pass_rate"`).

Sources:
- built-in (default): 35 problems we wrote, with our own reference solutions and hidden tests
  (`code_problems.py`); every fourth problem is in the test split.
- LiveCodeBench-format JSONL (`path=...`, optional `test_path=...`): records with
  `question_content`, `public_test_cases` / `private_test_cases` (JSON lists of
  {input, output, testtype: "stdin" | "functional"}; the compressed form of the released
  dataset is accepted too), `starter_code`, and `metadata` with `func_name`.
  Without `test_path`, every fifth record goes to the test split.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import secrets
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resd.envs.base import Environment, Outcome, Split, Task, clip_feedback
from resd.envs.code_problems import PROBLEMS, SHOWN_EXAMPLES
from resd.envs.sandbox import SandboxJob, SandboxPool, SandboxResult, require
from resd.envs.text import MAX_COMPLETION_CHARS, extract_python, printable
from resd.errors import UserError

_SHOW_CHARS = 300  # longest input/output quoted in feedback
_TRACEBACK_LINES = 8

# --- pure helpers ----------------------------------------------------------------------------

def extract_code(completion: str) -> str | None:
    """The program in a completion (see `resd.envs.text.extract_python`)."""
    return extract_python(completion)


def _lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.strip("\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


_INT = re.compile(r"[+-]?\d+")
_MAX_NUMBER_CHARS = 64  # longer tokens are compared as text, never parsed as numbers


def _float_token(text: str) -> float | None:
    if len(text) > _MAX_NUMBER_CHARS or _INT.fullmatch(text):
        return None  # integers (of any length) compare exactly, as text
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def stdout_matches(got: str, expected: str, tolerance: float | None = None) -> bool:
    """Judge comparison: line by line ignoring trailing spaces and trailing blank lines. Tokens are
    compared exactly (integers included); with a `tolerance` the problem states, two decimal
    numbers may differ by that much (absolute or relative)."""
    a, b = _lines(got), _lines(expected)
    if a == b:
        return True
    if tolerance is None:
        return False
    ta, tb = " ".join(a).split(), " ".join(b).split()
    if len(a) != len(b) or len(ta) != len(tb):
        return False
    for x, y in zip(ta, tb):
        if x == y:
            continue
        fx, fy = _float_token(x), _float_token(y)
        if fx is None or fy is None or not math.isclose(fx, fy, rel_tol=tolerance, abs_tol=tolerance):
            return False
    return True


def values_match(got: Any, expected: Any, tolerance: float | None = None) -> bool:
    """Function results: equal after a JSON round trip (tuples are lists), numbers exactly (Python
    compares ints and floats exactly), floats within the problem's stated `tolerance` if any."""
    if isinstance(got, bool) or isinstance(expected, bool):
        return isinstance(got, bool) and isinstance(expected, bool) and got == expected
    if isinstance(got, (int, float)) and isinstance(expected, (int, float)):
        if got == expected:
            return True
        floats = isinstance(got, float) or isinstance(expected, float)
        return (tolerance is not None and floats and math.isfinite(got) and math.isfinite(expected)
                and math.isclose(got, expected, rel_tol=tolerance, abs_tol=tolerance))
    if isinstance(got, list) and isinstance(expected, list):
        return len(got) == len(expected) and all(values_match(g, e, tolerance) for g, e in zip(got, expected))
    if isinstance(got, dict) and isinstance(expected, dict):
        return got.keys() == expected.keys() and all(values_match(got[k], expected[k], tolerance) for k in got)
    return got == expected


def parse_result(payload: str) -> tuple[bool, Any]:
    """(True, value) for a JSON value a program returned, (False, None) when it is not one, too
    deep, or holds an integer too long to convert; never raises."""
    try:
        return True, json.loads(payload)
    except (ValueError, RecursionError, MemoryError):
        return False, None


_HARNESS = '''\
import json, sys, traceback
_args = [json.loads(line) for line in sys.stdin.read().splitlines() if line.strip()]
_namespace = {"__name__": "solution"}
try:
    exec(compile(open("solution.py", encoding="utf-8").read(), "solution.py", "exec"), _namespace)
    if isinstance(_namespace.get("Solution"), type) and hasattr(_namespace["Solution"], FN_NAME):
        _target = getattr(_namespace["Solution"](), FN_NAME)
    elif callable(_namespace.get(FN_NAME)):
        _target = _namespace[FN_NAME]
    else:
        sys.stderr.write("NameError: the program defines no function named %r\\n" % FN_NAME)
        sys.exit(1)
    _result = _target(*_args)
except Exception as exc:
    _tb = exc.__traceback__
    while _tb is not None and _tb.tb_frame.f_code.co_filename != "solution.py":
        _tb = _tb.tb_next
    traceback.print_exception(type(exc), exc, _tb)
    sys.exit(1)
sys.stdout.write("\\n" + MARKER + json.dumps(_result, default=repr) + "\\n")
'''


def function_harness(fn_name: str, marker: str) -> str:
    """A main program that loads solution.py, calls `fn_name(*args)` (or `Solution().fn_name`,
    LeetCode style) with the JSON arguments on stdin, and prints the JSON result after `marker`."""
    return f"FN_NAME = {fn_name!r}\nMARKER = {marker!r}\n" + _HARNESS


@dataclass(frozen=True)
class Verdict:
    """The judge's word on one test."""

    status: str  # "passed" | "wrong" | "error" | "time_limit"
    output: str = ""  # what the program printed / returned (for wrong answers)
    error: str = ""  # short traceback or limit message (for errors)


def _short_traceback(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    if len(lines) > _TRACEBACK_LINES:
        lines = ["..."] + lines[-_TRACEBACK_LINES:]
    return "\n".join(lines)


def judge(test: dict[str, str], result: SandboxResult, marker: str | None,
          tolerance: float | None = None) -> Verdict:
    """Compare one sandbox run with one test's expected output (on the host: the expected
    output never enters the sandbox)."""
    if result.limit in ("wall_time", "cpu_time"):
        return Verdict("time_limit")
    if result.limit == "memory":
        return Verdict("error", error="Memory limit exceeded (MemoryError).")
    if result.limit == "output":
        return Verdict("error", error="Output limit exceeded: the program printed too much.")
    if result.limit == "forbidden" or result.exit_code != 0:
        return Verdict("error", error=_short_traceback(result.stderr) or f"exit status {result.exit_code}")
    if marker is None:
        ok = stdout_matches(result.stdout, test["output"], tolerance)
        return Verdict("passed" if ok else "wrong", output=result.stdout)
    if marker not in result.stdout:
        return Verdict("error", error="the function returned no result")
    printed, _, payload = result.stdout.rpartition(marker)
    parsed, got = parse_result(payload)
    if not parsed:
        return Verdict("wrong", output=payload.strip()[:_SHOW_CHARS])
    expected = json.loads(test["output"])
    return Verdict("passed" if values_match(got, expected, tolerance) else "wrong", output=payload.strip())


def _show(text: str) -> str:
    text = text.rstrip("\n")
    return text if len(text) <= _SHOW_CHARS else text[:_SHOW_CHARS] + " ... (cut)"


def _describe_input(test: dict[str, str], fn_name: str | None) -> str:
    if fn_name:
        args = ", ".join(line for line in test["input"].splitlines() if line.strip())
        return f"{fn_name}({_show(args)})"
    return _show(test["input"])


def judge_feedback(tests: list[dict[str, str]], verdicts: list[Verdict], fn_name: str | None,
                   time_limit: float, quoted: int | None = None) -> str:
    """Contest-judge feedback: first runtime error, else first time limit, else <= 2 wrong answers.

    `quoted`: only the first `quoted` tests (those the prompt shows) may be quoted; when every
    failure of the reported kind is on a later (hidden) test, it is reported by its kind and
    number alone: no input, no expected output, and nothing the program printed or raised (a
    program can print its own input)."""
    passed = sum(v.status == "passed" for v in verdicts)
    head = f"Passed {passed}/{len(tests)} tests."
    if passed == len(tests):
        return head + " All tests passed."
    label = "Call" if fn_name else "Input"
    limit = len(tests) if quoted is None else quoted
    for status, kind in (("error", "Runtime error"), ("time_limit", f"Time limit exceeded ({time_limit:g} s)")):
        failing = [i for i, v in enumerate(verdicts) if v.status == status]
        if not failing:
            continue
        shown = [i for i in failing if i < limit]
        if not shown:
            return f"{head}\n{kind} on hidden test {failing[0] + 1} (hidden tests are not quoted)."
        test, v = tests[shown[0]], verdicts[shown[0]]
        if status == "error":
            return f"{head}\nRuntime error on this test.\n{label}:\n{_describe_input(test, fn_name)}\n{v.error}"
        return f"{head}\n{kind} on this test.\n{label}:\n{_describe_input(test, fn_name)}"
    failing = [i for i, v in enumerate(verdicts) if v.status == "wrong"]
    shown = sorted((i for i in failing if i < limit), key=lambda i: len(tests[i]["input"]))
    if failing and not shown:
        return f"{head}\nWrong answer on hidden test {failing[0] + 1} (hidden tests are not quoted)."
    parts = [head]
    for i in shown[:2]:
        parts.append(f"Wrong answer.\n{label}:\n{_describe_input(tests[i], fn_name)}\n"
                     f"Output:\n{_show(verdicts[i].output) or '(nothing)'}\nExpected:\n{_show(tests[i]['output'])}")
    return "\n".join(parts)


# --- problem sources ---------------------------------------------------------------------------

def _builtin_problem(p: dict[str, Any]) -> dict[str, Any]:
    fn = p.get("fn_name")
    if fn:
        tests = [{"input": "\n".join(json.dumps(a) for a in args), "output": json.dumps(out),
                  "testtype": "functional"} for args, out in p["tests"]]
    else:
        tests = [{"input": inp, "output": out, "testtype": "stdin"} for inp, out in p["tests"]]
    return {"id": p["id"], "statement": p["statement"], "fn_name": fn, "starter_code": "",
            "tests": tests, "shown": tests[:SHOWN_EXAMPLES], "solution": p["solution"],
            "float_tolerance": p.get("float_tolerance")}


def _decode_cases(raw: Any, where: str) -> list[dict[str, str]]:
    if raw in (None, ""):
        return []
    if isinstance(raw, list):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        pass
    try:
        # The released LiveCodeBench files compress private tests: base64(zlib(pickle(json))).
        # Unpickling runs code from the file, so only load files you trust (as with any code).
        import pickle

        return json.loads(pickle.loads(zlib.decompress(base64.b64decode(raw))))
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{where}: test cases are neither JSON nor LiveCodeBench-compressed ({exc})") from exc


def load_livecodebench(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a LiveCodeBench-format JSONL file into problems (see the module docstring)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"code: no file {str(file)!r}; pass path= a LiveCodeBench-format .jsonl file")
    problems = []
    with open(file, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{file}:{n}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{where}: not a JSON line ({exc})") from exc
            if "question_content" not in record:
                raise UserError(f"{where}: missing 'question_content' (is this a LiveCodeBench file?)")
            public = _decode_cases(record.get("public_test_cases"), where)
            private = _decode_cases(record.get("private_test_cases"), where)
            tests = [{"input": str(t["input"]), "output": str(t["output"]),
                      "testtype": t.get("testtype", "stdin")} for t in public + private]
            if not tests:
                raise UserError(f"{where}: the problem has no test cases")
            metadata = record.get("metadata") or {}
            if isinstance(metadata, str):
                metadata = json.loads(metadata) if metadata.strip() else {}
            functional = tests[0]["testtype"] == "functional"
            fn_name = metadata.get("func_name") if functional else None
            if functional and not fn_name:
                raise UserError(f"{where}: functional tests need metadata.func_name")
            problems.append({
                "id": str(record.get("question_id") or record.get("question_title") or f"lcb-{n}"),
                "statement": record["question_content"], "fn_name": fn_name,
                "starter_code": record.get("starter_code") or "", "tests": tests,
                "shown": public[:SHOWN_EXAMPLES] if public else [], "solution": None,
                "float_tolerance": metadata.get("float_tolerance"),
            })
    return problems


def render_prompt(problem: dict[str, Any]) -> str:
    parts = [problem["statement"].strip()]
    fn = problem["fn_name"]
    for test in problem["shown"]:
        if fn:
            call = f"{fn}({', '.join(line for line in test['input'].splitlines() if line.strip())})"
            parts.append(f"Example: {call} returns {test['output']}")
        else:
            parts.append(f"Example input:\n{test['input'].rstrip()}\nExample output:\n{test['output'].rstrip()}")
    if problem["starter_code"]:
        parts.append(f"Start from this code:\n```python\n{problem['starter_code'].rstrip()}\n```")
    if fn:
        parts.append(f"Write the Python 3 function `{fn}` in one ```python code block. Do not read input or print.")
    else:
        parts.append("Write a complete Python 3 program in one ```python code block. "
                     "Read from standard input and print the answer to standard output.")
    return "\n\n".join(parts)


# --- the environment ---------------------------------------------------------------------------

FEEDBACK_TESTS = ("all", "shown")

class CodeEnv(Environment):
    """Python programming problems judged in the sandbox.

    Options: path (LiveCodeBench-format JSONL; default: the built-in problems), test_path,
    time_limit (seconds per test, 2.0), memory_mb (512), reward ("all_pass" | "pass_rate"),
    workers (parallel sandboxes; default: CPU count), sandbox ("bwrap", the default, or
    "unsafe-local": see resd.envs.sandbox; without bwrap the environment refuses to start).
    Hidden tests stay on the host: a program gets one test's input and its output is judged here.
    feedback_tests: "all" (default, as the paper's execution feedback: a failing test is quoted,
    input, output and expected output) or "shown" (only the tests the prompt shows are quoted; a
    failure on a hidden test names its kind and number only, so feedback gathered over many tries
    cannot be tabulated into the hidden answers).
    """

    name = "code"
    description = "Python problems with hidden stdin/stdout or function tests, judged in a sandbox"

    def __init__(self, path: str | None = None, test_path: str | None = None, time_limit: float = 2.0,
                 memory_mb: int = 512, reward: str = "all_pass", workers: int | None = None,
                 sandbox: str | None = None, feedback_tests: str = "all"):
        if feedback_tests not in FEEDBACK_TESTS:
            raise UserError(f"code: feedback_tests must be 'all' or 'shown', not {feedback_tests!r}")
        self.feedback_tests = feedback_tests
        if reward not in ("all_pass", "pass_rate"):
            raise UserError(f"code: reward must be 'all_pass' or 'pass_rate', not {reward!r}")
        if float(time_limit) <= 0:
            raise UserError("code: time_limit must be positive (seconds per test)")
        self.time_limit, self.memory_mb, self.reward = float(time_limit), int(memory_mb), reward
        self.workers = workers
        self.sandbox = require(sandbox).mode
        self._pool: SandboxPool | None = None
        if path is None:
            problems = [_builtin_problem(p) for p in PROBLEMS]
            split = {"train": [p for i, p in enumerate(problems) if i % 4 != 3],
                     "test": [p for i, p in enumerate(problems) if i % 4 == 3]}
        elif test_path is None:
            problems = load_livecodebench(path)
            split = {"train": [p for i, p in enumerate(problems) if i % 5 != 4],
                     "test": [p for i, p in enumerate(problems) if i % 5 == 4]}
        else:
            split = {"train": load_livecodebench(path), "test": load_livecodebench(test_path)}
        self._tasks = {s: [self._to_task(p, s) for p in ps] for s, ps in split.items()}

    @staticmethod
    def _to_task(problem: dict[str, Any], split: str) -> Task:
        meta = {k: problem.get(k) for k in ("fn_name", "tests", "solution", "float_tolerance")}
        meta["shown_tests"] = len(problem["shown"])  # the first tests are the prompt's examples
        return Task(id=f"code-{problem['id']}", prompt=[{"role": "user", "content": render_prompt(problem)}],
                    meta=meta)

    def tasks(self, split: Split) -> list[Task]:
        if split not in self._tasks:
            raise UserError(f"split must be 'train' or 'test', not {split!r}")
        return self._tasks[split]

    def reference_solution(self, task: Task) -> str | None:
        solution = task.meta.get("solution")
        return f"```python\n{solution}```" if solution else None

    def score(self, task: Task, completion: str) -> Outcome:
        return self.score_many([task], [completion])[0]

    def score_many(self, tasks: list[Task], completions: list[str]) -> list[Outcome]:
        """Judge a batch: every test of every runnable program goes through one sandbox pool."""
        marker = f"@@resd-result-{secrets.token_hex(8)}@@"
        plans: list[tuple[Task, str | None, str]] = []  # (task, code or None, early feedback)
        jobs: list[SandboxJob] = []
        for task, completion in zip(tasks, completions, strict=True):
            if len(completion) > MAX_COMPLETION_CHARS:
                code, problem = None, (f"The answer is {len(completion)} characters long, over the judge's limit "
                                       f"of {MAX_COMPLETION_CHARS}; it was not run.")
            else:
                code, problem = extract_code(completion), self._precheck(completion)
            plans.append((task, code, problem))
            if code is not None and not problem:
                jobs += [self._job(code, test, task.meta["fn_name"], marker) for test in task.meta["tests"]]
        results = iter(self._run(jobs))
        outcomes = []
        for task, code, problem in plans:
            tests = task.meta["tests"]
            if code is None or problem:
                outcomes.append(self._outcome([False] * len(tests), problem, {"error": "no_code" if code is None
                                                                              else "syntax"}))
                continue
            fn = task.meta["fn_name"]
            verdicts = [judge(t, next(results), marker if fn else None, task.meta.get("float_tolerance"))
                        for t in tests]
            quoted = task.meta.get("shown_tests", 0) if self.feedback_tests == "shown" else None
            feedback = judge_feedback(tests, verdicts, fn, self.time_limit, quoted)
            outcomes.append(self._outcome([v.status == "passed" for v in verdicts], feedback,
                                          {"verdicts": [v.status for v in verdicts]}))
        return outcomes

    @staticmethod
    def _precheck(completion: str) -> str:
        """Feedback for programs that cannot run at all ("" when it can be run)."""
        code = extract_code(completion)
        if code is None:
            return ("No Python code found. Put the whole solution in one ```python code block "
                    "(three backticks, the word python, the code, three backticks).")
        try:
            compile(code, "solution.py", "exec")  # parsing only: nothing runs on the host
        except SyntaxError as exc:
            where = f"line {exc.lineno}" if exc.lineno else "unknown line"
            text = (exc.text or "").rstrip()
            return f"Compile error: SyntaxError: {exc.msg} ({where})" + (f"\n    {text}" if text else "")
        except (ValueError, RecursionError, MemoryError) as exc:
            return f"Compile error: {type(exc).__name__}: {exc}"
        return ""

    def _job(self, code: str, test: dict[str, str], fn_name: str | None, marker: str) -> SandboxJob:
        common = dict(stdin=test["input"], wall_time=self.time_limit, memory_mb=self.memory_mb,
                      max_output_bytes=200_000, mode=self.sandbox)
        if fn_name:
            return SandboxJob(code=function_harness(fn_name, marker), files={"solution.py": code}, **common)
        return SandboxJob(code=code, **common)

    def _outcome(self, passed: list[bool], feedback: str, details: dict[str, Any]) -> Outcome:
        acc = sum(passed) / len(passed) if passed else 0.0
        reward = acc if self.reward == "pass_rate" else float(bool(passed) and all(passed))
        # The program's own output is quoted: no terminal escapes or control characters survive.
        return Outcome(reward=reward, acc=acc, feedback=clip_feedback(printable(feedback)), passed=passed,
                       details=details)

    def _run(self, jobs: list[SandboxJob]) -> list[SandboxResult]:
        if not jobs:
            return []
        if self._pool is None:
            self._pool = SandboxPool(self.workers)
        return self._pool.map(jobs)
