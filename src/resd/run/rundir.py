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
import re
import shutil
from pathlib import Path
from typing import Any

from resd.files import (UnreadableFile, json_safe, read_json_file, read_jsonl,
                        write_json_atomic, write_text_atomic)

_SNAPSHOT_NAME = re.compile(r"step_(\d{1,12})\.json")
_EVAL_WEIGHTS_NAME = re.compile(r"step_(\d{1,12})")


def snapshot_step(name: str, pattern: re.Pattern[str] = _SNAPSHOT_NAME) -> int | None:
    """The step in a snapshot's name (step_NNNNNN.json), or None for any other name."""
    match = pattern.fullmatch(name)
    return int(match.group(1)) if match else None


def row_step(row: dict[str, Any]) -> int | None:
    """A log line's step: a non-negative integer, else None (a line resd did not write)."""
    step = row.get("step", 0)
    return step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_STATE_FIELDS = {  # one check per field of resd.train.trainer.RunState (a test keeps them equal)
    "step": _count, "batch": _count, "iteration": _count, "rollouts": _count,
    "batch_best_reward": lambda v: v is None or _number(v),
    "eval_history": lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v),
    "data_order": lambda v: isinstance(v, list) and all(isinstance(t, str) for t in v),
    "finished": lambda v: isinstance(v, bool),
    "health": lambda v: isinstance(v, dict),
    "warnings": lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v),
    "context_totals": lambda v: isinstance(v, dict) and all(_number(x) for x in v.values()),
}


def read_run_state(path: Path) -> dict[str, Any]:
    """RUN/checkpoints/latest/state.json, checked field by field (the trainer's RunState):
    UnreadableFile naming the first field that is not what resd writes."""
    state = read_json_file(path)
    if not isinstance(state, dict):
        raise UnreadableFile(f"{path}: not a JSON object")
    for key, value in state.items():
        check = _STATE_FIELDS.get(key)
        if check is None:
            raise UnreadableFile(f"{path}: unknown field {key!r}")
        if not check(value):
            raise UnreadableFile(f"{path}: field {key!r} has the wrong type or sign ({str(value)[:40]!r})")
    return state


def _ints(value: Any, low: int, high: int) -> bool:
    return isinstance(value, list) and all(isinstance(x, int) and not isinstance(x, bool) and low <= x <= high
                                           for x in value)


def read_rng_state(path: Path) -> dict[str, Any]:
    """RUN/checkpoints/latest/rng_rank<R>.json, checked against the shapes `rng_state` writes."""
    state = read_json_file(path)
    ok = isinstance(state, dict)
    if ok:
        python, numpy, torch_state = state.get("python"), state.get("numpy"), state.get("torch")
        ok = (isinstance(python, list) and len(python) == 3 and isinstance(python[0], int)
              and _ints(python[1], 0, 2**32) and len(python[1]) == 625 and (python[2] is None or _number(python[2]))
              and isinstance(numpy, list) and len(numpy) == 5 and numpy[0] == "MT19937"
              and _ints(numpy[1], 0, 2**32 - 1) and len(numpy[1]) == 624
              and all(isinstance(x, int) and not isinstance(x, bool) for x in numpy[2:4]) and _number(numpy[4])
              and 0 <= numpy[2] <= 624 and _ints(torch_state, 0, 255)
              and all(_ints(s, 0, 255) for s in state.get("cuda", [])))
    if not ok:
        raise UnreadableFile(f"{path}: not the random-generator states resd writes")
    return state


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
            rows = [r for r in read_jsonl(path, missing_ok=True, skip_damaged=True)
                    if (at := row_step(r)) is not None and at <= step]
            write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
        for snap in self.playbooks.glob("step_*.json"):
            at = snapshot_step(snap.name)
            if at is not None and at > step and snap.is_file():
                snap.unlink()
        eval_dir = self.checkpoints / "eval"
        if eval_dir.is_dir():
            for d in eval_dir.glob("step_*"):
                at = snapshot_step(d.name, _EVAL_WEIGHTS_NAME)
                if at is not None and at > step:
                    if d.is_symlink() or not d.is_dir():
                        d.unlink()
                    else:
                        shutil.rmtree(d, ignore_errors=True)
