"""Judges a policy cannot fool, tried as an adversarial policy would, through `env.score`:
the answer-key trick and near-miss numbers on every built-in code problem, forged harness output,
and fuzzed completions that must never make `score()` raise."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resd.envs import get
from resd.envs.base import Outcome

# Looks for the file holding the hidden tests anywhere it can read, and answers from it: the
# printed output for this input (stdin problems) or the stored result for these arguments.
ANSWER_KEY = """
import glob, json, runpy, sys
PLACES = ["/*/*/src/resd/envs/code_problems.py", "/*/*/*/src/resd/envs/code_problems.py",
          "/*/*/.venv/lib/python3*/site-packages/resd/envs/code_problems.py",
          sys.base_prefix + "/lib/python3*/site-packages/resd/envs/code_problems.py",
          "/usr/lib/python3*/*-packages/resd/envs/code_problems.py"]
def answers():
    for path in sorted({p for pattern in PLACES for p in glob.glob(pattern, recursive=True)}):
        try:
            yield from runpy.run_path(path)["PROBLEMS"]
        except Exception:
            pass
def solve(*args):
    for p in answers():
        for case, out in p["tests"]:
            if p.get("fn_name") and list(case) == list(args):
                return out
if __name__ == "__main__":
    data = sys.stdin.read()
    for p in answers():
        for case, out in p["tests"]:
            if not p.get("fn_name") and case == data:
                print(out)
                sys.exit(0)
"""


def answer_key(task) -> str:
    fn = task.meta["fn_name"]
    return ANSWER_KEY + (f"\n{fn} = solve\n" if fn else "")


# The reference solution, run inside the sandbox, with every number of its output nudged:
# integers by one, decimals in their sixth significant digit (outside any stated tolerance).
NEAR_MISS_STDIN = '''
import io, re, sys, contextlib
buffer = io.StringIO()
with contextlib.redirect_stdout(buffer):
    exec(compile(SOLUTION, "solution", "exec"), {"__name__": "__main__"})
def nudge(m):
    s = m.group(0)
    return str(int(s) + 1) if re.fullmatch(r"-?\\d+", s) else repr(float(s) * (1 + 1e-5) + 1e-5)
print(re.sub(r"-?\\d+(?:\\.\\d+)?", nudge, buffer.getvalue()), end="")
'''


def near_miss_function(solution: str, fn: str) -> str:
    return solution + f'''
_real = {fn}
def _nudge(v):
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return v + 1
    if isinstance(v, float):
        return v * (1 + 1e-5) + 1e-5
    if isinstance(v, list):
        return [_nudge(x) for x in v] if v else [0]
    if isinstance(v, str):
        return v + "x"
    return v
def {fn}(*args):
    return _nudge(_real(*args))
'''


def fenced(code: str) -> str:
    return f"```python\n{code}\n```"


@pytest.fixture(scope="module")
def code_env():
    return get("code", workers=2)


@pytest.mark.slow
def test_the_answer_key_trick_scores_zero_on_every_built_in_problem(code_env):
    tasks = code_env.tasks("train") + code_env.tasks("test")
    assert len(tasks) == 35
    outcomes = code_env.score_many(tasks, [fenced(answer_key(t)) for t in tasks])
    assert [o.reward for o in outcomes] == [0.0] * 35
    assert sum(o.acc for o in outcomes) == 0.0
    # Control: where the file is reachable (no OS isolation, the hook switched off by the program)
    # the same trick solves the problems, so the zeros above are the sandbox's doing.
    bypass = "import __main__\n__main__._hook.__code__ = (lambda *a, **k: None).__code__\n"
    unsafe = get("code", workers=2, sandbox="unsafe-local", time_limit=20.0)
    cheats = unsafe.score_many(tasks[:4], [fenced(bypass + answer_key(t)) for t in tasks[:4]])
    assert [o.reward for o in cheats] == [1.0] * 4


@pytest.mark.slow
def test_near_miss_numbers_score_zero_where_the_exact_answer_scores_one(code_env):
    tasks = code_env.tasks("train") + code_env.tasks("test")
    exact = code_env.score_many(tasks, [code_env.reference_solution(t) for t in tasks])
    assert all(o.reward == 1.0 for o in exact)
    nudged = []
    for t in tasks:
        solution, fn = t.meta["solution"], t.meta["fn_name"]
        program = near_miss_function(solution, fn) if fn else f"SOLUTION = {solution!r}\n" + NEAR_MISS_STDIN
        nudged.append(fenced(program))
    outcomes = code_env.score_many(tasks, nudged)
    # Problems whose output has a number fail every test that prints one; none may pass all.
    numeric = [t for t in tasks if any(any(c.isdigit() for c in case["output"]) for case in t.meta["tests"])]
    assert len(numeric) >= 25
    for task, outcome in zip(tasks, outcomes):
        if task in numeric:
            assert outcome.reward == 0.0, (task.id, outcome.feedback)


def test_forged_function_results_are_parsed_on_the_host_and_cannot_crash_it(code_env):
    task = next(t for t in code_env.tasks("train") if t.meta["fn_name"])
    fn = task.meta["fn_name"]
    forgeries = [
        "import sys, __main__\nsys.stdout.write('\\n' + __main__.MARKER + '[' * 100000 + '\\n')\nsys.exit(0)",
        "import sys, __main__\nsys.stdout.write('\\n' + __main__.MARKER + '9' * 5000 + '\\n')\nsys.exit(0)",
        "import sys, __main__\nsys.stdout.write('\\n' + __main__.MARKER + 'NaN\\n')\nsys.exit(0)",
    ]
    for forged in forgeries:
        outcome = code_env.score(task, fenced(f"{forged}\ndef {fn}(*a):\n    return 0"))
        assert isinstance(outcome, Outcome) and outcome.reward == 0.0


def test_bouncingsim_forged_result_lines_are_rejected():
    from resd.envs.bouncing.judge import parse_results

    assert parse_results("[" * 100000, 2, 3) is None
    assert parse_results(json.dumps([{"status": "ok", "value": [[1e309, 0]]}] * 2), 2, 3) is None
    assert parse_results(json.dumps([{"status": "ok", "value": "x"}] * 2), 2, 3) is None
    assert parse_results(json.dumps([{"status": "ok", "value": [[1, 2]]}]), 2, 3) is None  # wrong count
    ok = parse_results(json.dumps([{"status": "ok", "value": [[1, 2], [3, 4], [5, 6]]},
                                   {"status": "timeout", "message": "m" * 5000}]), 2, 3)
    assert ok[0]["value"][2] == [5.0, 6.0] and len(ok[1]["message"]) == 800


HOSTILE = [
    "```python\nprint(" + "9" * 5000 + ")\n```",
    "```python\nprint('\ud800')\n```",
    "```python\nx = " + "-" * 6000 + "1\n```",
    "<think>" + "a <think> b " * 9000,
    "```python\n" + "(" * 200 + "\n```",
    "\x00" * 1000,
    "```python\nimport sys\nsys.stdout.buffer.write(bytes(range(256)) * 100)\n```",
    "`" * 10000,
    "x" * 300_000,
]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["code", "bouncingsim-easy", "constraints", "manufactoria-has"])
def test_hostile_completions_never_make_score_raise(name):
    env = get(name) if name != "code" else get(name, workers=1)
    task = env.tasks("train")[0]
    for completion in HOSTILE:
        outcome = env.score(task, completion)
        assert isinstance(outcome, Outcome) and outcome.reward == 0.0


completion_text = st.one_of(
    st.text(max_size=400),
    st.builds(lambda body: f"```python\n{body}\n```", st.text(max_size=300)),
    st.builds(lambda a, b: f"<think>{a}</think>{b}", st.text(max_size=100), st.text(max_size=200)),
    st.builds(lambda n: "[" * n + "]" * (n // 2), st.integers(0, 3000)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(completion=completion_text)
def test_fuzzed_completions_never_make_the_pure_judges_raise(completion):
    for name in ("constraints", "manufactoria-has"):
        env = _envs(name)
        outcome = env.score(env.tasks("train")[0], completion)
        assert isinstance(outcome, Outcome) and 0.0 <= outcome.reward <= 1.0


_CACHE: dict = {}


def _envs(name):
    if name not in _CACHE:
        _CACHE[name] = get(name)
    return _CACHE[name]


def test_a_judge_that_raises_costs_only_that_answer():
    from resd.envs import Environment, Task, score_guarded

    class Fragile(Environment):
        name = "fragile"

        def tasks(self, split):
            return [Task(id="t", prompt=[{"role": "user", "content": "q"}])]

        def score(self, task, completion):
            if completion == "boom":
                raise ZeroDivisionError("judge bug")
            return Outcome(reward=1.0, acc=1.0, feedback="", passed=[True])

    task = Fragile().tasks("train")[0]
    outcomes = score_guarded(Fragile(), [task] * 3, ["fine", "boom", "fine"])
    assert [o.reward for o in outcomes] == [1.0, 0.0, 1.0]
    assert "judge failed" in outcomes[1].feedback and outcomes[1].details["judge_error"].startswith("ZeroDivisionError")


def test_a_correct_threaded_program_passes(code_env):
    """Competitive programs often run their solution in a thread with a larger stack."""
    task = next(t for t in code_env.tasks("train") if t.id == "code-add-two")
    program = ("import sys, threading\nsys.setrecursionlimit(10**6)\nthreading.stack_size(1 << 26)\n"
               "def main():\n    a, b = map(int, sys.stdin.readline().split())\n    print(a + b)\n"
               "t = threading.Thread(target=main)\nt.start()\nt.join()\n")
    outcome = code_env.score(task, fenced(program))
    assert outcome.reward == 1.0, outcome.feedback


def test_the_sandbox_a_run_used_is_written_to_its_run_directory(tmp_path):
    import json as _json

    from resd.models import tiny_model
    from resd.train import RESDTrainer, load_config

    cfg = load_config(method="grpo", env="code", model="tiny-random", batch_size=2, max_batches=1, inner_updates=1,
                      num_generations=2, max_completion_length=4, eval_every=0, progress=False,
                      env_options={"workers": 1}, output_dir=str(tmp_path / "run"))
    model, tok = tiny_model()
    run = RESDTrainer(cfg, model=model, tokenizer=tok).train()
    layers = _json.loads((run / "sandbox.json").read_text())
    assert layers["mode"] == "bwrap" and layers["os_isolation"] and not layers["reason"]


def test_a_correct_program_printing_a_closing_think_tag_passes(code_env):
    """Red team: a correct program with '</think>' in a string literal was rejected (the tag was
    taken for the end of the reasoning)."""
    task = next(t for t in code_env.tasks("train") if t.id == "code-add-two")
    program = "import sys\nMARK = '</think>'\na, b = map(int, sys.stdin.readline().split())\nprint(a + b)\n"
    assert code_env.score(task, fenced(program)).reward == 1.0
    assert code_env.score(task, "<think>\nplan: add.\n</think>\n" + fenced(program)).reward == 1.0
    # a real end of reasoning still ends it: a draft before it is not the answer
    draft = fenced("print('draft')")
    assert code_env.score(task, draft + "\n</think>\n" + fenced(program)).reward == 1.0
    assert code_env.score(task, fenced(program) + "\n</think>\nno program").reward == 0.0


HOMOGLYPHS = "\u0441\u0430t"  # Cyrillic с and а, Latin t: reads "cat"


@pytest.mark.parametrize("text,kind,params,passes", [
    ((HOMOGLYPHS + " ") * 63, "max_words", {"n": 20}, False),  # red team: 63 such words passed
    ("the ｃａｔ sat on the ｍａｔ", "max_words", {"n": 6}, False),  # fullwidth letters are words too
    ("w\u200bo\u200br\u200bd", "min_words", {"n": 2}, False),  # zero-width spaces split no word
    ("one two three", "min_words", {"n": 3}, True),
    ("red\uff0c blue", "no_commas", {}, False),  # fullwidth comma
    ("red\u201a blue", "no_commas", {}, False),  # single low-9 quotation mark, drawn as a comma
    ("red\u3001blue\ufe50", "no_commas", {}, False),  # ideographic and small commas
    ("red blue", "no_commas", {}, True),
    ("Это. Это.", "sentences", {"n": 1}, False),  # Cyrillic sentences are sentences
])
def test_constraint_checkers_count_what_a_person_counts(text, kind, params, passes):
    from resd.envs.constraints import check_all

    [(_, ok, why)] = check_all(text, [{"kind": kind, "params": params}])
    assert ok is passes, why


TABULATOR = """
import sys
TABLE = {table!r}
key = sys.stdin.read().rstrip("\\n")
print(TABLE.get(key, "0"))
"""


def _tabulate(env, task, tries: int) -> float:
    """The red team's policy: answer from a table of what earlier feedback quoted (input ->
    expected output), grown after each try; no attempt at the problem itself."""
    import re

    table: dict[str, str] = {}
    reward = 0.0
    for _ in range(tries):
        outcome = env.score(task, fenced(TABULATOR.format(table=table)))
        reward = max(reward, outcome.reward)
        for given, expected in re.findall(r"Input:\n(.*?)\nOutput:\n.*?\nExpected:\n(.*?)(?:\nWrong answer\.|\Z)",
                                          outcome.feedback, re.DOTALL):
            table[given] = expected
    return reward


def test_feedback_on_hidden_tests_can_be_kept_from_a_tabulating_policy():
    """Red team: with the paper's feedback (failing tests quoted) a policy that tabulates the
    feedback of its tries reaches reward 1.0 without solving anything; with feedback_tests=shown
    no hidden input or expected output is ever quoted, whatever the program prints or raises."""
    quoting, shown_only = get("code"), get("code", feedback_tests="shown")
    task = next(t for t in quoting.tasks("train") if t.id == "code-add-two")
    assert _tabulate(quoting, task, tries=6) == 1.0  # the attack is real
    task = next(t for t in shown_only.tasks("train") if t.id == "code-add-two")
    assert _tabulate(shown_only, task, tries=6) == 0.0
    hidden = task.meta["tests"][task.meta["shown_tests"]:]
    leaks = ["import sys\nprint(sys.stdin.read())", "import sys\nraise SystemExit(sys.stdin.read())",
             "import sys\nraise ValueError(sys.stdin.read())", "import sys, time\nsys.stdin.read()\ntime.sleep(9)"]
    for program in leaks:
        feedback = shown_only.score(task, fenced(program)).feedback
        for test in hidden:
            assert test["input"].strip() not in feedback and f"\n{test['output']}\n" not in feedback + "\n", feedback
    with pytest.raises(Exception, match="feedback_tests"):
        get("code", feedback_tests="none")
