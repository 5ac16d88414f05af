"""`resd envs` and `resd env show` through the real CLI entry point."""

from __future__ import annotations

import pytest

from resd.cli import main
from resd.envs import registry
from resd.envs.base import Environment, Outcome, Task


class _BrokenEnv(Environment):
    name = "broken-for-test"
    description = "needs a data file"

    def __init__(self):
        raise FileNotFoundError("data/broken.jsonl not found; pass path=...")

    def tasks(self, split):  # pragma: no cover - never built
        return []

    def score(self, task, completion):  # pragma: no cover
        return Outcome(0.0, 0.0, "")


class _NoReferenceEnv(Environment):
    name = "noref-for-test"

    def tasks(self, split):
        return [Task(id="only", prompt=[{"role": "user", "content": "Say hi."}], meta={"answer": "hi"})]

    def score(self, task, completion):
        ok = completion.strip() == "hi"
        return Outcome(float(ok), float(ok), "" if ok else "expected hi", passed=[ok])


@pytest.fixture
def extra_envs(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register()(_BrokenEnv)
    registry.register()(_NoReferenceEnv)


def test_envs_lists_sizes_and_survives_a_broken_environment(extra_envs, capsys):
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert rows["constraints"][1:3] == ["512", "128"]
    assert rows["code"][1:3] == ["27", "8"]
    assert rows["broken-for-test"][1] == "unavailable"
    assert "data/broken.jsonl not found" in out


def test_show_scores_the_reference_solution(capsys):
    assert main(["env", "show", "constraints", "--task", "constraints-train-0003"]) == 0
    out = capsys.readouterr().out
    assert "-- prompt" in out and "constraints-train-0003" in out
    assert "-- completion (reference solution)" in out
    assert "reward: 1   acc: 1.000" in out and "[PASS]" in out


def test_show_scores_a_given_completion_with_options(tmp_path, capsys):
    completion = tmp_path / "answer.txt"
    completion.write_text("```python\nprint(0)\n```\n")
    argv = ["env", "show", "code", "--split", "test", "--env-opt", "time_limit=1.5", "--completion", str(completion)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "reward: 0" in out and "Wrong answer." in out and "Expected:" in out
    assert "8 test tasks" in out


def test_show_without_reference_says_how_to_score(extra_envs, capsys):
    assert main(["env", "show", "noref-for-test"]) == 0
    out = capsys.readouterr().out
    assert "Say hi." in out and "answer: 'hi'" in out and "pass --completion FILE" in out


def test_show_lists_ids_and_rejects_bad_input(capsys):
    assert main(["env", "show", "constraints", "--env-opt", "train_size=3", "--ids"]) == 0
    assert capsys.readouterr().out.split() == [f"constraints-train-000{i}" for i in range(3)]
    assert main(["env", "show", "constraints", "--task", "missing"]) == 2
    assert "no task with id 'missing'" in capsys.readouterr().err
    assert main(["env", "show", "constraints", "--env-opt", "no-equals-sign"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert main(["env", "show", "no-such-env"]) == 2
    assert "unknown environment" in capsys.readouterr().err
    assert main(["env", "show", "constraints", "--completion", "/nonexistent/file.txt"]) == 2
    assert "cannot read --completion" in capsys.readouterr().err
