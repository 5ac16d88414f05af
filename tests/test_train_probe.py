"""`resd probe`: the teacher-advantage probe scores answers exactly, measures every slot alone and
cumulatively, and `teacher_slots: auto` keeps only the slots it found helpful."""

from __future__ import annotations

import json

import pytest
import torch

from resd.models import tiny_model
from resd.context import SLOT_NAMES
from resd.train.build import automatic_slots
from resd.policy.packing import answer_logprobs
from resd.experiments.probe import ProbeResult, ProbeSettings, TaskEvidence, probe_teacher

SLOTS = SLOT_NAMES


def test_answer_logprobs_of_padded_answers_equal_unpadded_forwards():
    """Answers of different lengths scored together (left-padded prompt, right-padded answers)
    give each answer's log-probability under a plain forward of prompt + answer."""
    model, tok = tiny_model(seed=3)
    prompt = tok("<|im_start|>user\nname a fruit<|im_end|>\n<|im_start|>assistant\n")["input_ids"]
    answers = [[45, 67, 89, 2], [100, 3], [7]]
    got = answer_logprobs(model, prompt, answers, tok.pad_token_id, temperature=0.7)
    for answer, value in zip(answers, got):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + answer])).logits[0, len(prompt) - 1:-1] / 0.7
        expected = torch.log_softmax(logits.float(), -1)[torch.arange(len(answer)), torch.tensor(answer)].sum()
        assert value == pytest.approx(float(expected), abs=1e-4)


def _evidence(task, good, failed, **advantage):
    return TaskEvidence(task, "reference", good, failed, shown={s: True for s in SLOTS}, advantage=advantage)


def test_margins_verdict_and_auto_choice_from_evidence():
    rows = [_evidence(f"t{i}", 4, 2, **{"alone:feedback": (-0.4, 0.2), "alone:solution": (2.0 + i, -0.2),
                                        "alone:previous_trial": (0.1, 0.9), "cumulative:feedback": (-0.4, 0.2),
                                        "cumulative:solution": (1.0, 0.0)}) for i in range(3)]
    result = ProbeResult(env="e", model="m", settings=ProbeSettings(), evidence=rows, skipped={},
                         template_slots=list(SLOTS))
    margins = result.margins()
    # feedback: good -0.4/4 tokens, failed +0.2/2 tokens -> margin -0.1 - 0.1 = -0.2 per token
    assert margins["feedback"]["mean"] == pytest.approx(-0.2) and margins["feedback"]["n"] == 3
    assert margins["solution"]["mean"] == pytest.approx((2.0 + 1.0) / 4 + 0.1)
    assert margins["reflection"]["n"] == 0
    assert result.helpful_slots() == ["solution"]
    slots = automatic_slots(result.helpful_slots())
    assert slots.solution and not (slots.feedback or slots.previous_trial or slots.reflection or slots.playbook)
    verdict = result.verdict()
    assert "helps: solution +0.85" in verdict and "feedback -0.20" in verdict and "previous_trial -0.42" in verdict
    assert "no evidence" in verdict and "reflection" in verdict


@pytest.mark.slow
def test_probe_command_writes_json_chart_and_verdict(tmp_path, capsys):
    from resd.cli import main

    out = tmp_path / "probe"
    assert main(["probe", "--env", "constraints", "--model", "tiny-random", "--tasks", "3", "--samples", "3",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads((out / "probe.json").read_text())
    # A task whose samples all pass has no failure to probe (random text obeys "no commas").
    n = data["probed_tasks"]
    assert n >= 1 and n + data["skipped"]["no_failure"] == 3 and data["skipped"]["no_good_answer"] == 0
    assert printed.startswith(f"teacher vs student on {n} task") and "probe.json" in printed
    assert data["template_slots"] == list(SLOTS)
    # the constraints env has a reference solution: every failure is compared with it
    assert all(t["good_source"] == "reference" for t in data["tasks"])
    assert data["variants"]["alone:feedback"]["margin_per_token"]["n"] == n
    assert (out / "probe.png").read_bytes()[:4] == b"\x89PNG"


def test_probe_without_any_failure_reports_it(tmp_path):
    from toyenv import LetterEnv

    class Always(LetterEnv):
        def score(self, task, completion):
            from resd.envs import Outcome

            return Outcome(reward=1.0, acc=1.0, feedback="", passed=[True])

    model, tok = tiny_model()
    result = probe_teacher(model, tok, Always(), ProbeSettings(tasks=2, samples=2, max_new_tokens=4), progress=False)
    assert result.evidence == [] and result.skipped["no_failure"] == 2
    assert "on 0 tasks" in result.verdict()


def test_auto_slots_probe_the_training_split_and_are_read_back_on_resume(tmp_path, capsys):
    from resd.train import RESDTrainer, load_config

    cfg = load_config(method="resd", env="letters", model="tiny-random", teacher_slots="auto", probe_tasks=3,
                      probe_samples=3, batch_size=2, max_batches=1, inner_updates=1, max_completion_length=6,
                      eval_every=0, progress=False, output_dir=str(tmp_path / "run"),
                      context={"reflection_max_new_tokens": 6, "curation_max_new_tokens": 6})
    model, tok = tiny_model(seed=1)
    run = RESDTrainer(cfg, model=model, tokenizer=tok).train()
    probe = json.loads((run / "update_probe.json").read_text())
    assert probe["check_pairs"] >= 1 and all(t.startswith("train-") for t in probe["check_tasks"])
    assert set(probe["variants"]) == {"all", "alone:feedback", "alone:reflection", "alone:playbook", "alone:solution"}
    assert (run / "update_probe.png").exists() and not (run / "probe.json").exists()
    err = capsys.readouterr().err
    assert "resd: update probe: one update on" in err and "teacher_slots: auto ->" in err
    # the engine reads exactly the slots the probe found helpful
    trainer = RESDTrainer.from_run_dir(run)
    trainer.setup()
    assert trainer.context_engine.policy.slots.on() == [s for s in SLOT_NAMES if s in probe["helpful_slots"]]
    assert "resd: update probe:" not in capsys.readouterr().err  # read back, not probed again



def _auto_trainer(tmp_path, name: str, **extra):
    from resd.train import RESDTrainer, load_config

    cfg = load_config(method="sdpo", env="letters", model="tiny-random", teacher_slots="auto", probe_tasks=3,
                      probe_samples=3, batch_size=2, max_batches=1, inner_updates=1, max_completion_length=6,
                      eval_every=0, progress=False, output_dir=str(tmp_path / name), **extra)
    model, tok = tiny_model(seed=1)
    trainer = RESDTrainer(cfg, model=model, tokenizer=tok)
    trainer.setup()
    return trainer, json.loads((trainer.run.root / "update_probe.json").read_text())


@pytest.mark.parametrize("lora", [None, {"r": 4, "alpha": 8}])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_auto_probe_copies_the_starting_weights_as_a_plain_float32_model(tmp_path, lora, dtype):
    """What `auto`'s update probe copies: the weights the run starts from (with LoRA in half
    precision, its half-precision base), as a plain float32 model with every parameter trainable and
    no LoRA wrapper (the probe's own `build_policy` adds one again), sharing no storage with the run."""
    from resd.train.build import plain_float32_copy

    model, _ = tiny_model(seed=1)
    held = torch.bfloat16 if lora and dtype == "bfloat16" else torch.float32
    start = {n: t.detach().to(held).float() for n, t in model.state_dict().items()}
    trainer, _ = _auto_trainer(tmp_path, "run", lora=lora, dtype=dtype)
    plain = plain_float32_copy(trainer.policy)
    assert not hasattr(plain, "peft_config")
    state = plain.state_dict()
    assert state.keys() == start.keys() and all(torch.equal(state[k], start[k]) for k in start)
    # its forward computes in float32 (no autocast left from the run's accelerator)
    model.load_state_dict(start)
    ids = torch.tensor([[5, 17, 42, 9, 300]])
    with torch.no_grad():
        assert torch.allclose(plain(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-6)
    assert all(p.requires_grad and p.dtype == torch.float32 for p in plain.parameters())
    student = {t.data_ptr() for t in trainer.policy.student.state_dict().values()}
    assert not student & {t.data_ptr() for t in state.values()}


def test_auto_probe_in_bfloat16_measures_what_float32_measures(tmp_path):
    """Mixed precision (float32 masters, bfloat16 compute): the update probe scores in float32, so one
    small update's Δ log p agrees with the float32 run's (a bfloat16 forward cannot resolve it: it
    scored ±1e-3 nats of rounding noise around a ~1e-4 change)."""
    _, full = _auto_trainer(tmp_path, "f32", dtype="float32", learning_rate=1e-4)
    _, half = _auto_trainer(tmp_path, "bf16", dtype="bfloat16", learning_rate=1e-4)
    for key in ("good_per_token", "failed_per_token"):
        a, b = full["variants"]["all"][key]["mean"], half["variants"]["all"][key]["mean"]
        assert a != 0 and abs(b - a) <= 0.15 * abs(a), (key, a, b)
