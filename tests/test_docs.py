"""The documentation's code runs: every block of docs/environments.md, in order, from an empty
folder (the first Python block is the reader's `my_tasks.py`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```(python|bash)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def blocks(doc: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer((ROOT / "docs" / doc).read_text())]


@pytest.mark.slow
def test_every_block_of_the_environment_guide_runs(tmp_path, monkeypatch):
    found = blocks("environments.md")
    assert [kind for kind, _ in found].count("bash") >= 2 and found[0][1].startswith("# my_tasks.py")
    (tmp_path / "my_tasks.py").write_text(found[0][1])
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    namespace: dict = {}
    for kind, code in found[1:]:
        if kind == "python":
            exec(compile(code, "docs/environments.md", "exec"), namespace)
        else:
            proc = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, f"{code}\n{proc.stdout}\n{proc.stderr}"
    assert (tmp_path / "runs" / "word-length-demo" / "summary.json").exists()
    assert (tmp_path / "runs" / "word-length-grpo" / "metrics.jsonl").exists()


def test_the_algorithm_map_names_functions_that_exist():
    """docs/algorithm.md points a reader at functions; each must still be there."""
    import importlib

    text = (ROOT / "docs" / "algorithm.md").read_text()
    modules = ["resd.train.trainer", "resd.train.build", "resd.policy.update", "resd.policy.teacher",
               "resd.policy.packing", "resd.generation.sampling", "resd.envs.base", "resd.eval.scoring", "resd.eval.metrics",
               "resd.context.engine", "resd.context.playbook", "resd.context.updater", "resd.context.reflect",
               "resd.context.buffer", "resd.context.teacher_prompt", "resd.distill.losses", "resd.distill.masks",
               "resd.generation.engines", "resd.experiments.probe", "resd.train.health", "resd.context", "resd.context.slots",
               "resd.rollout", "resd.distill", "resd.eval", "resd"]
    loaded = [importlib.import_module(m) for m in modules]

    def attribute(obj: object, parts: list[str]) -> object | None:
        for part in parts:
            obj = getattr(obj, part, None)
            if obj is None:
                return None
        return obj

    def exists(dotted: str) -> bool:
        """A name on one of the modules above, or a dotted path under `resd` (module, then attributes)."""
        parts = dotted.split(".")
        if any(attribute(module, parts) is not None for module in loaded):
            return True
        for cut in range(len(parts), 0, -1):
            try:
                module = importlib.import_module("resd." + ".".join(parts[:cut]))
            except ImportError:
                continue
            return attribute(module, parts[cut:]) is not None
        return False

    def missing(text: str) -> list[str]:
        names = set(re.findall(r"`([A-Za-z_][\w.]*)`", text))
        code_names = [n for n in names if re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", n) and (
            "." in n or "_" in n or n[0].isupper())]
        return sorted(n for n in code_names if not exists(n) and not exists(n.split(".", 1)[-1]))

    assert missing(text) == []
    # the check itself can fail: a name that is not there is reported, under any package
    assert missing("`policy.update.no_such_function`, `context.NoSuchEngine`, `ContextEngine.nothing`") == [
        "ContextEngine.nothing", "context.NoSuchEngine", "policy.update.no_such_function"]
