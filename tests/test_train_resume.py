"""A run killed with SIGKILL and continued with `resd train --resume` ends exactly like an
uninterrupted run: same data order, context state (playbook + buffer), metrics and weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

CONFIG = {
    "method": "resd", "env": "toyenv:LetterEnv", "env_options": {"train_size": 12, "test_size": 2}, "model": "tiny-random", "batch_size": 2,
    "max_batches": 3, "inner_updates": 2, "max_completion_length": 8, "learning_rate": 1e-3,
    "warmup_steps": 2, "eval_every": 0, "progress": False, "max_teacher_prompt_length": 1024,
    # Sampled (not greedy) reflections use the global torch RNG: resume must restore it.
    "context": {"reflection_max_new_tokens": 8, "curation_max_new_tokens": 8, "reflection_temperature": 1.0,
                "curation_temperature": 1.0, "concise_every": 2},
}
STEPS = 6


def _train(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "resd.cli", "train", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def _comparable(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, subprocess_env):
    env = subprocess_env
    config = tmp_path / "resume.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    full, killed = tmp_path / "full", tmp_path / "killed"

    reference = _train(["--config", str(config), "--output-dir", str(full)], env)
    victim = _train(["--config", str(config), "--output-dir", str(killed)], env)
    deadline = time.time() + 240
    while len(_lines(killed / "metrics.jsonl")) < 3 and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert victim.poll() is None, "the run finished before it could be killed:\n" + victim.stdout.read()
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert not (killed / "summary.json").exists()
    done_before = len(_lines(killed / "metrics.jsonl"))
    assert 3 <= done_before < STEPS

    resumed = _train(["--resume", str(killed)], env)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    ref_out, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, ref_out

    a, b = _lines(full / "metrics.jsonl"), _lines(killed / "metrics.jsonl")
    assert [r["step"] for r in b] == list(range(1, STEPS + 1))
    assert _comparable(a) == _comparable(b)
    # the raw reflector/curator answers: every step once, as in the uninterrupted run
    ctx_log_a, ctx_log_b = _lines(full / "context.jsonl"), _lines(killed / "context.jsonl")
    assert ctx_log_a and ctx_log_a == ctx_log_b

    state_a = json.loads((full / "checkpoints/latest/state.json").read_text())
    state_b = json.loads((killed / "checkpoints/latest/state.json").read_text())
    assert state_a["data_order"] == state_b["data_order"] and state_b["step"] == STEPS
    ctx_a = json.loads((full / "checkpoints/latest/context.json").read_text())
    ctx_b = json.loads((killed / "checkpoints/latest/context.json").read_text())
    assert ctx_a == ctx_b
    assert json.loads((full / f"playbooks/step_{STEPS:06d}.json").read_text()) == \
        json.loads((killed / f"playbooks/step_{STEPS:06d}.json").read_text())
    for name in ("student.safetensors", "teacher.safetensors"):
        wa = load_file(str(full / "checkpoints/latest" / name))
        wb = load_file(str(killed / "checkpoints/latest" / name))
        assert wa.keys() == wb.keys()
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name


def test_resume_of_a_directory_without_checkpoint_is_a_clear_error(tmp_path):
    from resd.cli import main

    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"method": "resd"}))
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2
