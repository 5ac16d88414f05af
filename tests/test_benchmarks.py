"""Every benchmark runs by one command and prints its ratios (tiny random model, so seconds).

The numbers themselves are machine-dependent and are not asserted; what a user relies on is that
each script runs end to end and prints the side-by-side table with a ratio and a verdict.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "generation_throughput.py": ["--model", "tiny-random", "--prompts", "4", "--batch-size", "2",
                                 "--max-new-tokens", "8", "--repeats", "1"],
    "train_throughput.py": ["--model", "tiny-random", "--batch", "4", "--max-new-tokens", "8", "--repeats", "1"],
    "memory.py": ["--model", "tiny-random", "--batch", "2", "--max-new-tokens", "8"],
    "context_overhead.py": ["--model", "tiny-random", "--batch", "2", "--steps", "1", "--max-new-tokens", "8"],
    "step_latency.py": ["--model", "tiny-random", "--env", "constraints", "--batch-size", "2", "--updates", "1", "--max-new-tokens", "8",
                        "--context-tokens", "8"],
    "sandbox_overhead.py": ["--repeats", "2"],
}


@pytest.mark.parametrize("script", sorted(CASES))
def test_benchmark_runs_and_prints_its_ratio(script: str, tmp_path: Path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *CASES[script]],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(r"\d+\.\d+", out)
    assert re.search(r"PASS|MISS|info", out), out
    if script == "step_latency.py":
        # every update starts from the same weights with step-seeded rollouts: RESD (N=1) and
        # SDPO (N=1) must have sampled the very same answers, so their rollout work is equal
        resd, sdpo, _ = re.search(r"tokens/rollout\s+(\S+)\s+(\S+)\s+(\S+)", out).groups()
        assert resd == sdpo, out


def test_learning_benchmark_quick_prints_gain_per_method(tmp_path: Path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "learning_cpu.py"), "--quick",
                           "--out", str(tmp_path / "lc")], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for method in ("resd", "sdpo", "grpo", "resd\\+auto", "sdpo\\+auto"):
        assert re.search(rf"^{method}\s", proc.stdout, re.M), proc.stdout
    assert (tmp_path / "lc" / "report" / "report.md").exists()
    # finished runs keep their logs, not their checkpoints (--keep-checkpoints keeps them)
    runs = sorted(p.parent for p in (tmp_path / "lc").glob("*/summary.json"))
    assert len(runs) == 5 and all((r / "metrics.jsonl").exists() for r in runs)
    assert not list((tmp_path / "lc").glob("*/checkpoints"))


def test_remedies_quick_prints_the_table_and_which_predictor_got_the_sign(tmp_path: Path):
    out = tmp_path / "rem"
    command = [sys.executable, str(ROOT / "benchmarks" / "learning_cpu.py"), "--remedies", "--quick",
               "--methods", "sdpo,sdpo+sharp,grpo", "--tasks", "start-word", "--out", str(out)]
    # first train only, then a second call reuses the runs and adds the step-0 predictors
    proc = subprocess.run([*command, "--no-predictors", "--keep-checkpoints"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "remedies.json").read_text())["tasks"]["start-word"]["predictors"] == {}
    assert not list(out.glob("start-word/*/predictors.json"))
    assert len(list(out.glob("start-word/*/checkpoints/latest"))) == 3
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("finished earlier, reusing") == 3, proc.stdout
    assert not list(out.glob("start-word/*/checkpoints")), "reused runs' checkpoints are dropped by default"
    for method in ("sdpo", "sdpo\\+sharp", "grpo"):
        assert re.search(rf"^{method}\s", proc.stdout, re.M), proc.stdout
    table = json.loads((out / "remedies.json").read_text())["tasks"]["start-word"]
    predictors = table["predictors"]
    # GRPO has no teacher: only the two self-distillation runs are predicted
    assert predictors["n"] == 2 and [r["method"] for r in predictors["runs"]] == ["sdpo", "sdpo+sharp"]
    assert set(predictors["sign_right"]) == {"margin", "update_margin", "entropy"}
    assert all((out / "start-word" / f"{m}-seed0" / "predictors.json").exists() for m in ("sdpo", "sdpo-sharp"))
    assert re.search(r"^gain or not told right: margin \d/2, update_margin \d/2, entropy \d/2$", proc.stdout, re.M)
    assert re.search(r"^warned exactly on the runs that did not gain: teacher_disagrees \d/2, entropy_rising \d/2$",
                     proc.stdout, re.M)


def test_distill_diagnosis_quick_writes_tokens_update_probe_and_plots(tmp_path: Path):
    out = tmp_path / "diag"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "distill_diagnosis.py"), "--quick",
                           "--methods", "sdpo", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "diagnosis.json").read_text())
    sdpo = report["methods"]["sdpo"]
    assert sdpo["tokens"]["tokens"] > 0 and set(sdpo["update_probe"]) == {"trainer", "failures"}
    assert sdpo["update_probe"]["trainer"]["heldout_good_dlogp_per_token"]["n"] == report["heldout_pairs"]
    assert (out / "diagnosis-sdpo.png").read_bytes()[:4] == b"\x89PNG"
