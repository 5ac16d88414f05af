"""The run directory written by `resd train` (reports and `--resume` read it):

    RUN/config.yaml                 resolved config (RESDConfig.to_dict)
    RUN/metrics.jsonl               one line per policy update
    RUN/eval.jsonl                  one line per evaluation
    RUN/context.jsonl               raw reflector / success-tagger / curator answers, one line each
                                    (step, phase, example_id, ok, text): why a playbook stays empty
    RUN/summary.json                method, env, seed, model, selected_step, selected, final
    RUN/playbooks/step_NNNNNN.json  context state (playbook + buffer) after each update
    RUN/checkpoints/latest/         everything --resume needs (see checkpoint.py)
    RUN/checkpoints/eval/step_NNNNNN/  weights at each evaluation (pruned to the selected one)
    RUN/checkpoints/selected/       the rank-sum selected weights (Hugging Face / PEFT directory)
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from resd.files import json_safe, read_jsonl, write_json_atomic, write_text_atomic


class RunDir:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # paths ------------------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def evals(self) -> Path:
        return self.root / "eval.jsonl"

    @property
    def context_log(self) -> Path:
        return self.root / "context.jsonl"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def playbooks(self) -> Path:
        return self.root / "playbooks"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def latest(self) -> Path:
        return self.checkpoints / "latest"

    @property
    def selected(self) -> Path:
        return self.checkpoints / "selected"

    def eval_weights(self, step: int) -> Path:
        return self.checkpoints / "eval" / f"step_{step:06d}"

    def create(self) -> None:
        for d in (self.root, self.playbooks, self.checkpoints):
            d.mkdir(parents=True, exist_ok=True)

    # writers ----------------------------------------------------------------------------------------
    def append(self, path: Path, record: dict[str, Any]) -> None:
        with path.open("a") as f:
            f.write(json.dumps(json_safe(record), default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def log_metrics(self, record: dict[str, Any]) -> None:
        self.append(self.metrics, record)

    def log_eval(self, record: dict[str, Any]) -> None:
        self.append(self.evals, record)

    def log_context_outputs(self, step: int, outputs: list[dict[str, Any]]) -> None:
        """One line per model answer of the context update that produced `step`."""
        if not outputs:
            return
        with self.context_log.open("a") as f:
            for out in outputs:
                f.write(json.dumps(json_safe({"step": step, **out}), default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def snapshot_playbook(self, step: int, state: dict[str, Any]) -> None:
        write_json_atomic(self.playbooks / f"step_{step:06d}.json", state)

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.summary, summary)

    # resume -----------------------------------------------------------------------------------------
    def truncate_after(self, step: int) -> None:
        """Drop log lines and snapshots from steps after the checkpoint (they will be redone)."""
        for path in (self.metrics, self.evals, self.context_log):
            if not path.exists():
                continue
            rows = [r for r in read_jsonl(path, missing_ok=True, skip_damaged=True) if isinstance(r.get("step", 0), (int, float))
                    and r.get("step", 0) <= step]
            write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
        for snap in self.playbooks.glob("step_*.json"):
            if int(snap.stem.split("_")[1]) > step:
                snap.unlink()
        eval_dir = self.checkpoints / "eval"
        if eval_dir.exists():
            for d in eval_dir.glob("step_*"):
                if int(d.name.split("_")[1]) > step:
                    shutil.rmtree(d, ignore_errors=True)
