"""`resd probe --update`: one real distillation update per slot variant on a copy of the model,
measured on held-out training prompts; `teacher_slots: auto` keeps what it found helpful."""

from __future__ import annotations

import json
import math

import pytest
import torch

from resd.context import SLOT_NAMES
from resd.experiments.update_probe import (UpdateProbeResult, UpdateProbeSettings, VariantEffect, probe_update,
                                           score_pairs, slot_variants)
from resd.models import tiny_model
from resd.policy.packing import answer_logprobs


def _result(**effects) -> UpdateProbeResult:
    rows = [VariantEffect(name, [name.split(":")[-1]], 4, 10, good=list(g), failed=list(f), entropy=[0.0] * len(g))
            for name, (g, f) in effects.items()]
    return UpdateProbeResult(env="e", model="m", method="resd", settings=UpdateProbeSettings(),
                             template_slots=list(SLOT_NAMES), check_pairs=3, update_samples=8,
                             update_success_rate=0.25, effects=rows)


def test_auto_keeps_slots_whose_update_margin_is_above_zero_beyond_noise():
    result = _result(**{
        "all": ([0.3, 0.2, 0.25], [-0.1, 0.0, -0.05]),
        "alone:feedback": ([0.2, 0.21, 0.19], [0.0, 0.01, -0.01]),   # +0.2 with a tight CI: kept
        "alone:solution": ([0.5, -0.4, 0.3], [0.0, 0.0, 0.0]),       # mean +0.13, CI crosses 0: not kept
        "alone:reflection": ([-0.2, -0.2, -0.1], [0.1, 0.0, 0.1]),   # the update lowers the good answer
        "alone:playbook": ([0.3], [0.0]),                            # one check prompt: no CI, not kept
    })
    assert result.effect("alone:feedback").stats()["update_margin"]["mean"] == pytest.approx(0.2)
    # previous_trial informs nothing alone: kept only beside a helpful slot when all slots together help
    assert result.helpful_slots() == ["feedback", "previous_trial"]
    verdict = result.verdict()
    assert "alone:feedback: update margin +0.200" in verdict and verdict.endswith("helpful: feedback, previous_trial")
    hurting = _result(**{"all": ([-0.3, -0.2, -0.25], [0.0, 0.0, 0.0]),
                         "alone:feedback": ([0.2, 0.21, 0.19], [0.0, 0.01, -0.01])})
    assert hurting.helpful_slots() == ["feedback"]
    # a right-way update that spreads the student (held-out entropy up beyond noise) is not kept
    spreading = _result(**{"alone:feedback": ([0.2, 0.21, 0.19], [0.0, 0.01, -0.01]),
                           "alone:solution": ([0.2, 0.21, 0.19], [0.0, 0.01, -0.01])})
    spreading.effect("alone:feedback").entropy = [0.2, 0.18, 0.22]
    spreading.effect("alone:solution").entropy = [-0.2, -0.18, -0.22]
    assert spreading.helpful_slots() == ["solution"]


def test_variants_are_the_templates_slots_together_then_each_informing_slot_alone():
    names = [name for name, _ in slot_variants(["previous_trial", "feedback", "solution"])]
    assert names == ["all", "alone:feedback", "alone:solution"]
    together = dict(slot_variants(["feedback", "solution"]))["all"]
    assert together.on() == ["feedback", "solution"]


def test_score_pairs_match_the_probe_scorer_and_measure_entropy():
    from resd.experiments.update_probe import CheckPair

    model, tok = tiny_model(seed=3)
    prompt = tok("<|im_start|>user\nname a fruit<|im_end|>\n<|im_start|>assistant\n")["input_ids"]
    pair = CheckPair("t", prompt, [45, 67, 89, 2], [100, 3], "reference")
    (scores,) = score_pairs(model, [pair], tok.pad_token_id, 0.7)
    good, failed = answer_logprobs(model, prompt, [pair.good, pair.failed], tok.pad_token_id, 0.7)
    assert (scores.good, scores.failed) == pytest.approx((good, failed), abs=1e-5)
    assert scores.positions == 6 and 0 < scores.entropy_sum / 6 <= math.log(model.config.vocab_size) + 1e-4


def _cfg(tmp_path, **extra):
    from resd.train import load_config

    values = dict(method="sdpo", env="constraints", model="tiny-random", max_completion_length=6,
                  learning_rate=1e-2, generation_batch_size=16, progress=False, output_dir=str(tmp_path / "run"))
    values.update(extra)
    return load_config(**values)


def test_update_probe_moves_a_copy_and_leaves_the_model_and_accelerator_as_they_were(tmp_path):
    from resd.envs import get
    from resd.train.build import build_accelerator

    cfg = _cfg(tmp_path)
    env = get(cfg.env, **cfg.env_options)
    model, tok = tiny_model(seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    acc = build_accelerator(cfg, None)
    lists = (list(acc._models), list(acc._optimizers))
    settings = UpdateProbeSettings(tasks=2, heldout=4, samples=4, seed=0)
    result = probe_update(cfg, model, tok, env, settings, acc, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert (list(acc._models), list(acc._optimizers)) == lists
    # constraints has a reference solution for every task: each held-out prompt with a failure is checked
    assert result.check_pairs >= 1 and len(result.check_tasks) == result.check_pairs
    together = result.effect("all")
    assert together.distilled_samples >= 1 and together.loss_tokens >= 1
    assert len(together.good) == result.check_pairs and any(abs(g) > 1e-4 for g in together.good)
    # before the update: teacher and student entropy at every distilled token of the "all" variant
    profile = result.entropy.stats()
    assert profile["gap"]["n"] == together.loss_tokens and 0.0 <= profile["teacher_broader_fraction"] <= 1.0
    assert "teacher's entropy minus the student's" in result.verdict()
    # the same seed measures the same numbers (the update is the run's, deterministic on a CPU)
    again = probe_update(cfg, model, tok, env, settings, acc, progress=False)
    assert again.effect("all").good == pytest.approx(together.good, abs=1e-6)


def test_update_probe_refuses_a_method_without_a_teacher(tmp_path):
    from resd.envs import get
    from resd.errors import UserError
    from resd.train.build import build_accelerator

    cfg = _cfg(tmp_path, method="grpo")
    model, tok = tiny_model(seed=1)
    with pytest.raises(UserError, match="no teacher"):
        probe_update(cfg, model, tok, get("constraints"), UpdateProbeSettings(), build_accelerator(cfg, None))


@pytest.mark.slow
@pytest.mark.parametrize("env", ["constraints", "code", "manufactoria-has", "bouncingsim-easy",
                                 "bouncingsim-medium", "finer"])
def test_probe_update_command_runs_on_every_built_in_environment(env, tmp_path, capsys):
    from resd.cli import main
    from resd.envs.registry import _BUILTINS

    assert set(_BUILTINS) == {"constraints", "code", "manufactoria-has", "bouncingsim-easy", "bouncingsim-medium",
                            "finer"}
    config = tmp_path / "probe.yaml"
    lines = ["model: tiny-random", "method: sdpo", "max_completion_length: 8", "learning_rate: 1.0e-2"]
    if env == "finer":
        from test_finer import _write

        data = tmp_path / "finer"
        data.mkdir()
        _write(data / "finer_train_batched_1000_samples.jsonl", 8)
        _write(data / "finer_val_batched_500_samples.jsonl", 2, offset=100)
        lines += ["env_options:", f"  data_dir: {data}"]
    config.write_text("\n".join(lines) + "\n")
    out = tmp_path / "probe"
    assert main(["probe", "--config", str(config), "--env", env, "--tasks", "1", "--samples", "2", "--update",
                 "--update-tasks", "1", "--heldout", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads((out / "update_probe.json").read_text())
    assert data["env"] == env and data["method"] == "sdpo" and "all" in data["variants"]
    assert "one update on" in printed and "update_probe.json" in printed
    assert (out / "update_probe.png").read_bytes()[:4] == b"\x89PNG"
    assert data["teacher_vs_student_entropy"]["gap"]["n"] >= 1
    # every built-in task has a reference solution: the held-out prompts whose samples failed are checked
    assert data["check_pairs"] >= 1
    assert data["variants"]["all"]["good_per_token"]["n"] == data["check_pairs"]
