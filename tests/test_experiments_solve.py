"""`resd solve` and `resd bench discovery` on a tiny random model and a task defined here."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml

from resd.envs.base import Environment, Outcome, Task
from resd.errors import UserError
from resd.experiments import bench, solve
from resd.experiments.discovery import DiscoveryComparison


class LetterTask(Environment):
    """Pass when the reply contains a given character ('#' never appears in the tiny model's replies)."""

    name = "letter-task"

    def tasks(self, split):
        letters = "eao#" if split == "test" else "eaot"
        return [Task(id=f"{split}-{c}", prompt=[{"role": "user", "content": f"Write a word with the letter {c}."}],
                     meta={"letter": c}) for c in letters]

    def score(self, task, completion):
        ok = task.meta["letter"] in completion.lower()
        return Outcome(reward=float(ok), acc=float(ok), passed=[ok],
                       feedback="" if ok else f"The reply has no letter {task.meta['letter']!r}.")


def tiny():
    from resd.models import tiny_model

    return tiny_model(seed=0)


def small_overrides() -> list[str]:
    return ["max_completion_length=8", "generation_batch_size=4", "context.reflection_max_new_tokens=8",
            "context.curation_max_new_tokens=8", "progress=false"]


def test_one_task_env_serves_one_task_and_delegates_scoring():
    env = solve.OneTaskEnv(LetterTask(), "test-a")
    assert [t.id for t in env.tasks("train")] == [t.id for t in env.tasks("test")] == ["test-a"]
    assert env.score(env.task, "banana").reward == 1.0
    assert env.score_many([env.task], ["xyz"])[0].feedback == "The reply has no letter 'a'."
    with pytest.raises(UserError, match="no task with id"):
        solve.OneTaskEnv(LetterTask(), "nope")


def test_solve_config_is_one_prompt_k_updates_with_test_time_defaults(tmp_path: Path):
    cfg = solve.solve_config(env="constraints", task_id="constraints-test-0000", attempts=5, model="tiny-random",
                             output_dir=tmp_path / "r")
    assert (cfg.batch_size, cfg.num_generations, cfg.inner_updates, cfg.max_batches) == (1, 1, 5, 1)
    assert (cfg.learning_rate, cfg.warmup_steps, cfg.eval_at_start) == (1e-5, 0, False)
    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump({"learning_rate": 3e-6}))
    assert solve.solve_config(env="constraints", task_id="x", attempts=2, config_path=str(config_file),
                              output_dir=tmp_path / "r2").learning_rate == 3e-6
    assert solve.solve_config(env="constraints", task_id="x", attempts=2, overrides=["warmup_steps=3"],
                              output_dir=tmp_path / "r3").warmup_steps == 3
    with pytest.raises(UserError, match="attempts"):
        solve.solve_config(env="constraints", task_id="x", attempts=0)


@pytest.mark.slow
def test_solve_logs_every_attempt_and_updates_the_model(tmp_path: Path):
    model, tokenizer = tiny()
    before = copy.deepcopy(model.state_dict())
    cfg = solve.solve_config(env="letter-task", task_id="test-#", attempts=3, model="tiny-random",
                             overrides=small_overrides(), output_dir=tmp_path / "run")
    result = solve.solve(cfg, model=model, tokenizer=tokenizer, env=LetterTask(), task_id="test-#")
    assert [a.number for a in result.attempts] == [1, 2, 3]
    assert [a.solved for a in result.attempts] == [False] * 3 and result.first_success is None
    assert result.final_eval is not None and result.final_eval["step"] == 3
    assert (result.run_dir / "checkpoints" / "selected").is_dir()  # the adapted weights are kept
    # Every attempt is distilled (feedback or the buffered solution is in the teacher prompt),
    # so the weights the caller passed in have moved.
    assert all(a.loss is not None and a.loss > 0 for a in result.attempts)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_discovery_outputs(tmp_path: Path):
    comparison = DiscoveryComparison(best_of_k=[0.25, 0.4, 0.5], self_distillation=[0.25, 0.5, 0.75])
    results = [bench.TaskResult("a", 3, 1, [2]), bench.TaskResult("b", 3, 0, [None])]
    text = bench.write_outputs(comparison, results, tmp_path, "demo")
    assert "| 2 | 0.400 | 0.500 |" in text
    assert "1.50x fewer attempts" in text
    assert "| b | 0/3 | - |" in text
    saved = json.loads((tmp_path / "discovery.json").read_text())
    assert saved["attempts_ratio"] == pytest.approx(1.5)
    assert (tmp_path / "discovery.png").read_bytes()[:4] == b"\x89PNG"


def test_choose_tasks():
    env = LetterTask()
    assert [t.id for t in bench.choose_tasks(env, count=2, split="test", task_ids=None)] == ["test-e", "test-a"]
    assert [t.id for t in bench.choose_tasks(env, count=9, split="train", task_ids=["train-t"])] == ["train-t"]
    with pytest.raises(UserError):
        bench.choose_tasks(env, count=0, split="test", task_ids=None)


def test_hardest_keeps_the_least_solved_tasks_in_split_order():
    tasks = ["a", "b", "c", "d"]
    assert bench.hardest(tasks, [(4, 2), (4, 0), (8, 1), (4, 0)], 3) == ["b", "c", "d"]
    assert bench.hardest(tasks, [(4, 0)] * 4, 2) == ["a", "b"]  # ties: the split's order
    with pytest.raises(ValueError):
        bench.hardest(tasks, [(4, 0)], 1)


def test_bench_discovery_screens_for_the_hard_task_from_the_cli(tmp_path: Path, capsys, monkeypatch):
    from resd.cli import main
    from resd.envs import register, registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # the test's env leaves with it
    register("letter-task-bench")(type("LetterBench", (LetterTask,), {}))
    out = tmp_path / "disc"
    args = ["bench", "discovery", "--env", "letter-task-bench", "--model", "tiny-random", "--tasks", "1",
            "--hard-from", "4", "--attempts", "2", "--out", str(out)]
    for o in small_overrides():
        args += ["--set", o]
    assert main(args) == 0
    printed = capsys.readouterr().out
    # '#' never appears in the tiny model's replies: the screening must pick that task
    assert "hard tasks: test-#" in printed
    saved = json.loads((out / "discovery.json").read_text())
    assert [t["task_id"] for t in saved["tasks"]] == ["test-#"]
    assert (out / "discovery.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["bench", "discovery", "--env", "letter-task-bench", "--tasks", "3", "--hard-from", "2"]) == 2
    assert "--hard-from must be at least --tasks" in capsys.readouterr().err
