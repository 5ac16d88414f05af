"""`evaluate` and `resd eval`: exact metrics with a model whose greedy answers are known."""

from __future__ import annotations

import json

import pytest

import resd.envs
from resd.cli import main
from resd.envs.base import Environment, Outcome, Task
from resd.errors import UserError
from resd.eval.evaluate import build_messages, default_out_dir, evaluate, parse_env_options, run_evaluation
from resd.models import chain_model, tiny_model

# With chain_model("abcdefgh") and greedy decoding, a prompt ending in letter x is answered with
# the letters after x: "a" -> "bcdefgh", "f" -> "gh", "h" -> "".
CASES = {"t-solved": ("a", ["b", "c"]), "t-half": ("f", ["g", "b"]), "t-none": ("h", ["x"])}


@resd.envs.register("eval-test-letters")
class LettersEnv(Environment):
    """Each test case is a letter the answer must contain."""

    def __init__(self, repeat: int = 1):
        self.repeat = repeat

    def tasks(self, split):
        if split == "train":
            return []
        return [Task(id=tid, prompt=[{"role": "user", "content": last * self.repeat}], meta={"cases": cases})
                for tid, (last, cases) in CASES.items()]

    def score(self, task, completion):
        passed = [c in completion for c in task.meta["cases"]]
        failed = [c for c, ok in zip(task.meta["cases"], passed) if not ok]
        return Outcome(reward=float(all(passed)), acc=sum(passed) / len(passed),
                       feedback=f"missing {failed}" if failed else "", passed=passed)


@resd.envs.register("eval-test-empty")
class EmptyEnv(Environment):
    def tasks(self, split):
        return []

    def score(self, task, completion):
        raise AssertionError("never called")


@pytest.fixture(scope="module")
def chain():
    return chain_model()


def test_evaluate_metrics_are_exact(chain):
    model, tokenizer = chain
    result = evaluate(model, tokenizer, LettersEnv(), k=2, temperature=0, max_new_tokens=16)
    assert result == {
        "per_task_mean@k": pytest.approx(1 / 3),
        "per_task_best@k": pytest.approx(1 / 3),
        "per_case_mean@k": pytest.approx((1 + 0.5 + 0) / 3),
        "per_case_best@k": pytest.approx((1 + 0.5 + 0) / 3),
        "k": 2,
        "n_tasks": 3,
    }


def test_limit_takes_the_first_tasks(chain):
    model, tokenizer = chain
    result = run_evaluation(model, tokenizer, LettersEnv(), k=1, limit=2, temperature=0, max_new_tokens=16)
    assert [t.id for t in result.tasks] == ["t-solved", "t-half"]
    assert result.texts == [["bcdefgh"], ["gh"]]
    assert result.metrics["per_task_mean@k"] == pytest.approx(0.5)


def test_prompt_transform_changes_what_the_model_sees(chain):
    model, tokenizer = chain
    # Appending "a" to every prompt makes every task answered with "bcdefgh".
    transform = lambda messages, task: messages[:-1] + [{"role": "user", "content": messages[-1]["content"] + "a"}]  # noqa: E731
    result = evaluate(model, tokenizer, LettersEnv(), k=1, temperature=0, max_new_tokens=16, prompt_transform=transform)
    assert result["per_task_mean@k"] == pytest.approx(2 / 3)  # t-none still needs an "x"


def test_build_messages_system_prompt_replaces_the_tasks_own():
    task = Task(id="x", prompt=[{"role": "system", "content": "old"}, {"role": "user", "content": "q"}])
    assert build_messages(task, "new") == [{"role": "system", "content": "new"}, {"role": "user", "content": "q"}]
    seen = []
    build_messages(task, None, lambda m, t: seen.append(t.id) or m)
    assert seen == ["x"]


def test_sample_records_and_per_task_rows(chain):
    model, tokenizer = chain
    result = run_evaluation(model, tokenizer, LettersEnv(), k=2, temperature=0, max_new_tokens=16)
    records = result.sample_records()
    assert len(records) == 6
    half = [r for r in records if r["task_id"] == "t-half"]
    assert half[0] == {"task_id": "t-half", "sample": 0, "completion": "gh", "reward": 0.0, "acc": 0.5,
                       "solved": False, "truncated": False, "feedback": "missing ['b']"}
    rows = {r["task_id"]: r for r in result.per_task_rows()}
    assert rows["t-solved"]["solved"] == 2 and rows["t-none"]["acc_best"] == 0.0


def test_evaluate_rejects_bad_k_and_limit(chain):
    model, tokenizer = chain
    with pytest.raises(UserError, match="k must be"):
        evaluate(model, tokenizer, LettersEnv(), k=0)
    with pytest.raises(UserError, match="limit must be"):
        evaluate(model, tokenizer, LettersEnv(), limit=0)
    with pytest.raises(UserError, match="no test tasks"):
        evaluate(model, tokenizer, EmptyEnv())


def test_sampling_with_a_seed_is_reproducible():
    model, tokenizer = tiny_model()
    a = run_evaluation(model, tokenizer, LettersEnv(), k=2, max_new_tokens=8, seed=5, progress=None)
    b = run_evaluation(model, tokenizer, LettersEnv(), k=2, max_new_tokens=8, seed=5, progress=None)
    assert a.texts == b.texts


def test_env_options_are_yaml_scalars():
    assert parse_env_options(["a=1", "b=true", "c=hello", "d=0.5", "e=", "f='7'"]) == {
        "a": 1, "b": True, "c": "hello", "d": 0.5, "e": "", "f": "7"}
    with pytest.raises(UserError, match="KEY=VALUE"):
        parse_env_options(["novalue"])
    with pytest.raises(UserError, match="not valid YAML"):
        parse_env_options(["a=[unclosed"])


def test_default_out_dir_is_safe_for_any_env_name():
    from datetime import datetime

    path = default_out_dir("my.module:Env", datetime(2026, 11, 22, 8, 30, 0))
    assert str(path) == "runs/eval-my.module_Env-20261122-083000"


@pytest.fixture(scope="module")
def chain_dir(tmp_path_factory, chain):
    model, tokenizer = chain
    path = tmp_path_factory.mktemp("chain-model")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_cli_writes_results_and_prints_the_table(chain_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["eval", "--env", "eval-test-letters", "--env-opt", "repeat=3", "--model", str(chain_dir),
                 "--k", "2", "--temperature", "0", "--max-new-tokens", "16", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "mean@2" in printed and "best@2" in printed and "33.33" in printed and "50.00" in printed

    results = json.loads((out / "results.json").read_text())
    assert results["metrics"]["per_task_best@k"] == pytest.approx(1 / 3)
    assert results["config"]["env_options"] == {"repeat": 3} and results["config"]["k"] == 2
    assert [r["task_id"] for r in results["per_task"]] == ["t-solved", "t-half", "t-none"]
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6 and samples[0]["completion"] == "bcdefgh"


@pytest.mark.parametrize("argv, fragment", [
    (["--env", "no-such-env"], "unknown environment 'no-such-env'; available:"),
    (["--env", "eval-test-letters", "--model", "./no/such/model"], "tiny-random"),
    (["--env", "eval-test-letters", "--env-opt", "colour=red"], "bad options for environment"),
    (["--env", "eval-test-letters", "--env-opt", "oops"], "KEY=VALUE"),
    (["--env", "eval-test-letters", "--k", "0"], "--k must be >= 1"),
    (["--env", "eval-test-letters", "--top-p", "1.5"], "--top-p"),
    (["--env", "eval-test-empty", "--model", "tiny-random"], "no test tasks"),
])
def test_cli_errors_are_one_line(argv, fragment, capsys):
    assert main(["eval", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1 and err.startswith("resd: error:")
