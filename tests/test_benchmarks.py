"""Every benchmark runs by one command and prints its ratios (tiny random model, so seconds).

The numbers themselves are machine-dependent and are not asserted; what a user relies on is that
each script runs end to end and prints the side-by-side table with a ratio and a verdict.
"""

from __future__ import annotations

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
