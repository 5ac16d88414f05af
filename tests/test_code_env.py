"""The code environment: our reference solutions pass, wrong programs get judge feedback."""

from __future__ import annotations

import json

import pytest

from resd.envs import get
from resd.envs.code import CodeEnv, extract_code, load_livecodebench, stdout_matches, values_match
from resd.envs.code_problems import PROBLEMS
from resd.errors import UserError


@pytest.fixture(scope="module")
def env():
    return CodeEnv()


def _fenced(code: str) -> str:
    return f"Here is my solution.\n```python\n{code}\n```\nDone."


def test_builtin_set_is_large_split_and_hides_tests(env):
    assert len(PROBLEMS) >= 30
    sizes = env.sizes()
    assert sizes["train"] + sizes["test"] == len(PROBLEMS) and sizes["test"] >= 6
    train_ids = {t.id for t in env.tasks("train")}
    assert train_ids.isdisjoint({t.id for t in env.tasks("test")})
    for task in env.tasks("train") + env.tasks("test"):
        tests = task.meta["tests"]
        assert len(tests) >= 3
        assert task.meta["solution"] not in task.prompt_text
        hidden = tests[1:]
        assert any(t["input"].strip() not in task.prompt_text for t in hidden), task.id


def test_every_reference_solution_passes_every_test(env):
    tasks = env.tasks("train") + env.tasks("test")
    outcomes = env.score_many(tasks, [env.reference_solution(t) for t in tasks])
    failed = {t.id: o.feedback for t, o in zip(tasks, outcomes) if o.reward != 1.0}
    assert not failed
    assert all(o.acc == 1.0 and "All tests passed" in o.feedback for o in outcomes)


def test_wrong_answer_feedback_shows_two_cases_with_expected(env):
    task = env.task_by_id("code-add-two")
    out = env.score(task, _fenced("a, b = map(int, input().split())\nprint(a * b)"))
    assert out.reward == 0.0 and 0 < out.acc < 1  # 0*0 == 0+0 passes one test
    assert out.feedback.count("Wrong answer.") == 2
    assert "Input:\n3 4\nOutput:\n12\nExpected:\n7" in out.feedback


def test_runtime_error_feedback_has_traceback_and_input(env):
    task = env.task_by_id("code-reverse-line")
    out = env.score(task, _fenced("s = input()\nprint(s[::-1])\nraise ValueError('boom')"))
    assert out.acc == 0.0
    assert "Runtime error" in out.feedback and "ValueError: boom" in out.feedback
    assert 'File "main.py", line 3' in out.feedback and "Input:\nhello" in out.feedback


def test_time_limit_and_forbidden_operations(env):
    task = env.task_by_id("code-digit-sum")
    slow = CodeEnv(time_limit=0.5).score(task, _fenced("while True:\n    pass"))
    assert slow.acc == 0.0 and "Time limit exceeded" in slow.feedback
    bad = env.score(task, _fenced("import os\nos.system('rm -rf /')"))
    assert bad.acc == 0.0 and "not allowed in the sandbox" in bad.feedback


def test_function_problems_accept_functions_and_solution_classes(env):
    task = env.task_by_id("code-roman-to-int")
    plain = env.score(task, env.reference_solution(task))
    assert plain.reward == 1.0
    body = task.meta["solution"].replace("def roman_to_int(s):", "def roman_to_int(self, s):")
    body = "class Solution:\n" + "".join("    " + line + "\n" for line in body.splitlines())
    assert env.score(task, _fenced(body)).reward == 1.0
    wrong = env.score(task, _fenced("def roman_to_int(s):\n    return len(s)"))
    assert wrong.reward == 0.0 and "Call:\nroman_to_int(" in wrong.feedback and "Expected:" in wrong.feedback
    missing = env.score(task, _fenced("def other(s):\n    return 1"))
    assert "no function named 'roman_to_int'" in missing.feedback


def test_no_code_and_syntax_errors_are_explained(env):
    task = env.task_by_id("code-add-two")
    none = env.score(task, "I would add the numbers.")
    assert none.reward == 0.0 and "No Python code" in none.feedback and none.passed == [False] * 5
    broken = env.score(task, _fenced("print(1 +"))
    assert "SyntaxError" in broken.feedback and broken.acc == 0.0


def test_pass_rate_reward():
    task = CodeEnv().task_by_id("code-add-two")
    out = CodeEnv(reward="pass_rate").score(task, _fenced("a, b = map(int, input().split())\nprint(a * b)"))
    assert out.reward == out.acc == 0.2


def test_extract_code_prefers_last_python_block_and_skips_thinking():
    text = "<think>```python\nprint('draft')\n```</think>```text\nnope\n```\n```python\nprint(1)\n```\n```python\nprint(2)\n```"
    assert extract_code(text).strip() == "print(2)"
    assert extract_code("```\nprint(3)\n```").strip() == "print(3)"
    assert extract_code("```python\nprint(4)\n").strip() == "print(4)"  # cut off by the token limit
    assert extract_code("no code here") is None


def test_output_comparison_rules():
    assert stdout_matches("1 2 \n3\n\n", "1 2\n3")
    assert not stdout_matches("1 2", "1\n2")
    assert not stdout_matches("YES", "yes")
    # decimals: exact unless the problem states a tolerance
    assert not stdout_matches("0.3333333", "0.33333333")
    assert stdout_matches("0.3333333", "0.33333333", tolerance=1e-6)
    assert not stdout_matches("0.33", "0.33333333", tolerance=1e-6)
    # integers: always exact, whatever the tolerance (near 10^9 a relative 1e-6 would accept +-1000)
    assert not stdout_matches("1000000999", "1000000000", tolerance=1e-6)
    assert not stdout_matches("832040.0000000002", "832040", tolerance=1e-6)  # a float Binet Fibonacci
    assert not stdout_matches("9" * 5000, "9" * 4999 + "8", tolerance=1e-6)  # huge numbers: text, no crash
    assert values_match([0.1 + 0.2, [1]], [0.3, [1]], tolerance=1e-6)
    assert not values_match([0.1 + 0.2, [1]], [0.3, [1]])
    assert not values_match(1000000999, 1000000000, tolerance=1e-6) and values_match(3, 3.0)
    assert not values_match(832040.0000000002, 832040, tolerance=None)
    assert not values_match(True, 1) and not values_match([1, 2], [2, 1])


def test_livecodebench_file_loads_and_judges(tmp_path):
    records = [
        {"question_id": "abc001", "question_title": "Double", "question_content": "Print twice the input.",
         "starter_code": "", "metadata": "{}",
         "public_test_cases": json.dumps([{"input": "2\n", "output": "4\n", "testtype": "stdin"}]),
         "private_test_cases": json.dumps([{"input": "5\n", "output": "10\n", "testtype": "stdin"}])},
        {"question_id": "lc002", "question_title": "Add", "question_content": "Return a + b.",
         "starter_code": "class Solution:\n    def add(self, a: int, b: int) -> int:\n        ",
         "metadata": json.dumps({"func_name": "add"}),
         "public_test_cases": json.dumps([{"input": "1\n2", "output": "3", "testtype": "functional"}]),
         "private_test_cases": json.dumps([{"input": "-1\n1", "output": "0", "testtype": "functional"}])},
    ]
    path = tmp_path / "lcb.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    problems = load_livecodebench(path)
    assert [len(p["tests"]) for p in problems] == [2, 2]
    env = CodeEnv(path=str(path), test_path=str(path))
    assert env.sizes() == {"train": 2, "test": 2}
    stdin_task, fn_task = env.tasks("train")
    assert "Print twice" in stdin_task.prompt_text and "Example input:\n2" in stdin_task.prompt_text
    assert "class Solution" in fn_task.prompt_text
    assert env.score(stdin_task, _fenced("print(2 * int(input()))")).reward == 1.0
    assert env.score(stdin_task, _fenced("print(4)")).acc == 0.5
    good = "class Solution:\n    def add(self, a: int, b: int) -> int:\n        return a + b"
    assert env.score(fn_task, _fenced(good)).reward == 1.0
    assert env.reference_solution(fn_task) is None


def test_bad_paths_and_options_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no file"):
        CodeEnv(path=str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "x"}\n')
    with pytest.raises(UserError, match="question_content"):
        CodeEnv(path=str(bad))
    with pytest.raises(UserError, match="reward"):
        CodeEnv(reward="partial")
    assert isinstance(get("code"), CodeEnv)
