"""Atomic checkpoints holding everything a run needs to continue exactly.

RUN/checkpoints/latest/ contains
    student.safetensors   trainable tensors (all weights, or the LoRA adapter)
    teacher.safetensors   the EMA teacher's copy of the same tensors (absent for GRPO)
    optimizer.pt          AdamW state          scheduler.pt   LR schedule state
    context.json          playbook + solution buffer + updater state
    rng_rank<R>.pt        python / numpy / torch RNG states of each process
    state.json            step, data position, counters, eval history, data order

Writes go through `resd.files.replace_dir_atomic`: a kill at any moment leaves either the old or
the new checkpoint, never half of one.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from resd.files import old_copy, replace_dir_atomic
from resd.train.teacher import trainable_parameters


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def student_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous().cpu() for n, p in trainable_parameters(model).items()}


def load_student_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    params = trainable_parameters(model)
    missing = sorted(set(params) - set(tensors))
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} student tensors, e.g. {missing[0]}; "
                         "was it written by a run with the same model and lora settings?")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(tensors[name].to(p.device, p.dtype))


def save_checkpoint(
    directory: Path,
    *,
    model: torch.nn.Module,
    teacher: Any | None,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    context_state: dict[str, Any] | None,
    state: dict[str, Any],
    rng_states: list[dict[str, Any]],
) -> None:
    """Write a complete checkpoint to `directory` atomically (main process only)."""
    with replace_dir_atomic(directory) as tmp:
        save_file(student_tensors(model), str(tmp / "student.safetensors"))
        if teacher is not None:
            save_file({n: t.cpu() for n, t in teacher.state_tensors().items()}, str(tmp / "teacher.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        if context_state is not None:
            (tmp / "context.json").write_text(json.dumps(context_state))
        for rank, rng in enumerate(rng_states):
            torch.save(rng, tmp / f"rng_rank{rank}.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=2))


def find_checkpoint(directory: Path) -> Path | None:
    """`directory`, or the previous complete copy a kill mid-swap left at `.NAME.old`."""
    directory = Path(directory)
    if (directory / "state.json").exists():
        return directory
    old = old_copy(directory)
    if (old / "state.json").exists():
        return old
    return None


def load_checkpoint(
    directory: Path,
    *,
    model: torch.nn.Module,
    teacher: Any | None,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    rank: int = 0,
) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]:
    """Restore model, teacher, optimiser and scheduler in place.

    Returns (state, context_state, rng_state of this rank); the caller applies the last two.
    """
    load_student_tensors(model, load_file(str(directory / "student.safetensors")))
    if teacher is not None:
        teacher.load_state_tensors(load_file(str(directory / "teacher.safetensors")))
    optimizer.load_state_dict(torch.load(directory / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(directory / "scheduler.pt", weights_only=False))
    context_path = directory / "context.json"
    context_state = json.loads(context_path.read_text()) if context_path.exists() else None
    rng_path = directory / f"rng_rank{rank}.pt"
    rng = torch.load(rng_path, weights_only=False) if rng_path.exists() else None
    state = json.loads((directory / "state.json").read_text())
    return state, context_state, rng
