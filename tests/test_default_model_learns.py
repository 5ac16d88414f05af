"""On the default model (SmolLM2-135M-Instruct), the demo's setting must keep learning: the probe
runs and explains the teacher, and GRPO raises the held-out score of the start-word task. A change
that breaks learning (a sign error, a mask, an optimiser step that does nothing) fails here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_demo_setting_learns_on_the_default_model(tmp_path, capsys):
    from resd.cli import main

    out = tmp_path / "run"
    code = main(["train", "--config", str(ROOT / "configs" / "demo.yaml"), f"output_dir={out}", "max_batches=2",
                 "eval_every=4", "probe_tasks=6", "progress=false"])
    assert code == 0
    printed = capsys.readouterr()
    assert "probe (resd teacher prompt): teacher vs student on" in printed.err
    probe = json.loads((out / "probe.json").read_text())
    assert probe["probed_tasks"] >= 4 and "previous_trial" in probe["template_slots"]
    evals = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [0, 4]
    before, after = evals[0]["per_task_mean@k"], evals[-1]["per_task_mean@k"]
    assert before < 0.35 and after >= before + 0.25, (before, after)  # measured: 0.19 -> 0.75
    assert "result: held-out per-task mean@4" in printed.out
