"""The training loop end to end on a tiny random model: every method writes a complete run dir."""

from __future__ import annotations

import json

import pytest
import torch

import resd.envs as envs
from resd.envs import Outcome
from resd.models import tiny_model
from resd.train import RESDTrainer, load_config
from resd.policy.teacher import EMATeacher, ema_update_
from toyenv import LetterEnv


def smoke_config(tmp_path, method, **extra):
    values = dict(env="letters", batch_size=2, max_batches=2, inner_updates=2,
                  max_completion_length=8, generation_batch_size=8, learning_rate=1e-3, warmup_steps=0,
                  eval_every=2, eval_k=2, eval_limit=2, progress=False, output_dir=str(tmp_path / method),
                  context={"reflection_max_new_tokens": 8, "curation_max_new_tokens": 8},
                  max_teacher_prompt_length=1024)
    if method != "resd":
        values["num_generations"] = 2 if method == "grpo" else 3
    values.update(extra)
    return load_config(method=method, **values)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["resd", "sdpo", "sdpo_ss", "rosd", "grpo"])
def test_every_method_runs_and_writes_the_run_directory(tmp_path, method):
    model, tokenizer = tiny_model(seed=1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    run = RESDTrainer(smoke_config(tmp_path, method), model=model, tokenizer=tokenizer).train()

    metrics = read_jsonl(run / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert [m["batch"] for m in metrics] == [0, 0, 1, 1] and [m["iteration"] for m in metrics] == [0, 1, 0, 1]
    n = 1 if method == "resd" else (2 if method == "grpo" else 3)
    assert [m["rollouts"] for m in metrics] == [2 * n, 4 * n, 6 * n, 8 * n]
    for m in metrics:
        for key in ("loss", "reward_mean", "success_rate", "playbook_size", "loss_tokens", "time/rollout",
                    "time/scoring", "time/reflection", "time/curation", "time/teacher_forward",
                    "time/student_step", "time/step"):
            assert key in m, key
        assert m["time/step"] >= m["time/rollout"]
    evals = read_jsonl(run / "eval.jsonl")
    assert [e["step"] for e in evals] == [0, 2, 4]
    for e in evals:
        assert {"per_task_mean@k", "per_task_best@k", "per_case_mean@k", "per_case_best@k", "k", "rollouts"} <= set(e)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["method"] == method and summary["selected_step"] in (0, 2, 4)
    assert summary["final"]["step"] == 4
    assert (run / "checkpoints" / "selected" / "config.json").exists()
    assert (run / "checkpoints" / "latest" / "state.json").exists()
    assert (run / "config.yaml").exists()
    if method == "resd":
        assert sorted(p.name for p in (run / "playbooks").iterdir()) == [f"step_{i:06d}.json" for i in range(1, 5)]
    # Seeded, so deterministic: every method met both successes and failures and updated the weights.
    assert 0 < sum(m["success_rate"] for m in metrics) < len(metrics)
    assert any(m["loss_tokens"] > 0 for m in metrics)
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())


def test_ema_update_is_the_paper_formula():
    teacher = [torch.tensor([1.0, 2.0]), torch.tensor([[0.0]])]
    student = [torch.tensor([3.0, 6.0]), torch.tensor([[10.0]])]
    ema_update_(teacher, student, 0.25)
    assert torch.allclose(teacher[0], torch.tensor([1.5, 3.0]))  # 0.75 * t + 0.25 * s
    assert torch.allclose(teacher[1], torch.tensor([[2.5]]))
    frozen = [torch.tensor([1.0])]
    ema_update_(frozen, [torch.tensor([5.0])], 0.0)
    assert frozen[0].item() == 1.0


def test_ema_teacher_full_model_tracks_the_student():
    model, _ = tiny_model(seed=2)
    teacher = EMATeacher(model, 0.1, adapter_only=False)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    teacher.update(model)
    for n, t in teacher.state_tensors().items():
        assert torch.allclose(t, start[n] + 0.1, atol=1e-6), n


def test_lora_teacher_swaps_adapter_weights_and_restores_the_student():
    from peft import LoraConfig, get_peft_model

    base, tokenizer = tiny_model(seed=3)
    model = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    teacher = EMATeacher(model, 0.5, adapter_only=True)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora" in n for n in trainable)
    with torch.no_grad():
        for p in trainable.values():
            p.fill_(0.2)
    teacher.update(model)  # shadow B was 0 (PEFT init) -> 0.1; A moved halfway to 0.2
    ids = torch.tensor([tokenizer("hello world")["input_ids"]])
    student_out = model(input_ids=ids).logits
    with teacher.weights_in(model) as t:
        inside = {n: p.detach().clone() for n, p in t.named_parameters() if p.requires_grad}
        teacher_out = t(input_ids=ids).logits
    for n, value in inside.items():
        assert torch.allclose(value, teacher.state_tensors()[n].to(value.dtype)), n
    assert all(torch.all(p == 0.2) for p in trainable.values())  # restored after the block
    assert not torch.allclose(student_out, teacher_out)
    assert torch.allclose(model(input_ids=ids).logits, student_out)


def test_lora_run_trains_only_the_adapter(tmp_path):
    model, tokenizer = tiny_model(seed=4)
    cfg = smoke_config(tmp_path, "resd", lora={"r": 2, "alpha": 4}, max_batches=1, eval_every=0)
    run = RESDTrainer(cfg, model=model, tokenizer=tokenizer).train()
    from safetensors.torch import load_file

    saved = load_file(str(run / "checkpoints" / "latest" / "student.safetensors"))
    assert saved and all("lora" in name for name in saved)
    assert set(saved) == set(load_file(str(run / "checkpoints" / "latest" / "teacher.safetensors")))


def test_early_stop_leaves_the_batch_when_everything_succeeds(tmp_path, monkeypatch):
    from resd.envs import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # the test's env leaves with it

    @envs.register("letters-always")
    class Always(LetterEnv):
        name = "letters-always"

        def score(self, task, completion):
            return Outcome(reward=1.0, acc=1.0, passed=[True], feedback="")

    model, tokenizer = tiny_model(seed=6)
    cfg = smoke_config(tmp_path, "resd", env="letters-always", inner_updates=4, early_stop=True,
                       min_updates=1, eval_every=0)
    run = RESDTrainer(cfg, model=model, tokenizer=tokenizer).train()
    metrics = read_jsonl(run / "metrics.jsonl")
    assert [(m["batch"], m["iteration"]) for m in metrics] == [(0, 0), (1, 0)]


def test_public_step_runs_one_iteration_on_given_tasks(tmp_path):
    model, tokenizer = tiny_model(seed=7)
    trainer = RESDTrainer(smoke_config(tmp_path, "resd", eval_every=0), model=model, tokenizer=tokenizer)
    task = LetterEnv().tasks("test")[0]
    record = trainer.step([task, task])
    assert record["step"] == 1 and record["rollouts"] == 2
    assert trainer.context_engine is not None and trainer.state.step == 1
    assert trainer.step([task])["step"] == 2


def test_metrics_also_go_to_tensorboard(tmp_path):
    model, tokenizer = tiny_model(seed=8)
    cfg = smoke_config(tmp_path, "sdpo", report_to=["tensorboard"], max_batches=1, inner_updates=1, eval_every=0)
    run = RESDTrainer(cfg, model=model, tokenizer=tokenizer).train()
    assert list(run.rglob("events.out.tfevents.*")), "no tensorboard event file under the run directory"


def test_cli_reports_config_errors_in_one_line(capsys):
    from resd.cli import main

    assert main(["train", "learnin_rate=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "learnin_rate" in err[0] and "learning_rate" in err[0]
