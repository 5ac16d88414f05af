"""Atomic checkpoints holding everything a run needs to continue exactly.

RUN/checkpoints/latest/ contains
    student.safetensors   trainable tensors (all weights, or the LoRA adapter), whole, in their stored
                          dtype: the float32 masters under mixed precision (exact resume)
    teacher.safetensors   the EMA teacher's copy of the same tensors (absent for GRPO)
    optimizer.pt          AdamW state          scheduler.pt   LR schedule state
    context.json          playbook + solution buffer + updater state
    rng_rank<R>.json      python / numpy / torch RNG states of each process
    state.json            step, data position, counters, eval history, data order

Writes go through `resd.files.replace_dir_atomic`: a kill at any moment leaves either the old or
the new checkpoint, never half of one. Reading runs no pickled code (see `load_checkpoint`).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from resd.errors import UserError
from resd.files import old_copy, read_json_file, replace_dir_atomic, require_regular_file
from resd.policy.teacher import trainable_parameters
from resd.run.rundir import read_rng_state, read_run_state
from resd.policy.tensors import copy_full_, full, is_sharded


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (and CUDA) generator states as plain JSON-able values."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {"python": [version, list(internal), gauss],
                             "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
                             "torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def student_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable tensors, whole and in their stored dtype (float32 masters under mixed
    precision). Sharded (FSDP2): every rank must call this."""
    return {n: full(p.detach()).contiguous().cpu() for n, p in trainable_parameters(model).items()}


def load_student_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    params = trainable_parameters(model)
    missing = sorted(set(params) - set(tensors))
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} student tensors, e.g. {missing[0]}; "
                         "was it written by a run with the same model and lora settings?")
    for name, p in params.items():
        copy_full_(p, tensors[name])


def _sharded(model: torch.nn.Module) -> bool:
    return any(is_sharded(p) for p in model.parameters())


def optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """AdamW's state as saved: its own state_dict, or under FSDP2 the whole (unsharded) state by
    parameter name from torch.distributed.checkpoint (every rank must call it)."""
    if not _sharded(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    if not _sharded(model):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


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
    main: bool = True,
) -> None:
    """Write a complete checkpoint to `directory` atomically. Every rank calls it (a sharded
    model's tensors are gathered from all of them); the main process writes."""
    student = student_tensors(model)
    teacher_state = {n: t.cpu() for n, t in teacher.state_tensors().items()} if teacher is not None else None
    optimizer_saved = optimizer_state(model, optimizer)
    if not main:
        return
    with replace_dir_atomic(directory) as tmp:
        save_file(student, str(tmp / "student.safetensors"))
        if teacher_state is not None:
            save_file(teacher_state, str(tmp / "teacher.safetensors"))
        torch.save(optimizer_saved, tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        if context_state is not None:
            (tmp / "context.json").write_text(json.dumps(context_state))
        for rank, rng in enumerate(rng_states):
            (tmp / f"rng_rank{rank}.json").write_text(json.dumps(rng))
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


def _damaged(path: Path, exc: BaseException) -> UserError:
    return UserError(f"checkpoint file {path} is damaged or incomplete ({type(exc).__name__}: {str(exc)[:120]}); "
                     f"restore it, or start the run again")


def _read(path: Path, how):
    if not path.exists():
        raise UserError(f"checkpoint file {path} is missing; restore it, or start the run again")
    try:
        return how(path)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to parse is a damaged file
        raise _damaged(path, exc) from exc


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

    Nothing here runs pickled code: tensors come from safetensors, the optimiser and scheduler
    states through `torch.load(weights_only=True)`, everything else from JSON. A damaged or missing
    file is one UserError naming it. Returns (state, context_state, rng_state of this rank); the
    caller applies the last two.
    """
    directory = Path(directory)
    state = _read(directory / "state.json", read_run_state)
    load_student_tensors(model, _read(directory / "student.safetensors",
                                      lambda p: load_file(str(require_regular_file(p)))))
    if teacher is not None:
        teacher.load_state_tensors(_read(directory / "teacher.safetensors",
                                         lambda p: load_file(str(require_regular_file(p)))))
    load_optimizer_state(model, optimizer, _read(directory / "optimizer.pt",
                                                 lambda p: torch.load(require_regular_file(p), weights_only=True)))
    scheduler.load_state_dict(_read(directory / "scheduler.pt",
                                    lambda p: torch.load(require_regular_file(p), weights_only=True)))
    context_path = directory / "context.json"
    context_state = _read(context_path, read_json_file) if context_path.exists() else None
    rng_path = directory / f"rng_rank{rank}.json"
    if not rng_path.exists() and (directory / f"rng_rank{rank}.pt").exists():
        raise UserError(f"{directory} was written by resd 0.1, which kept random-generator states as pickles; "
                        f"loading a pickle can run code, so this resd does not: resume it with resd 0.1 or "
                        f"start the run again")
    rng = _read(rng_path, read_rng_state) if rng_path.exists() else None
    return state, context_state, rng
