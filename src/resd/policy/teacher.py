"""The self-teacher: an exponential moving average of the student (paper §3.3, Alg. 1 line 19).

    theta_T <- (1 - eta) * theta_T + eta * theta        after every policy update

eta = 0 keeps the initial model (ROSD); eta = 1 would be the live student. Two storages:

* full fine-tuning: a separate copy of the model (no grad, eval mode) whose parameters are lerped
  towards the student's; the teacher forward is a plain forward of that copy. Under FSDP2 the
  copy is sharded like the student (resd.train.sharding) and the EMA runs on each rank's slices.
* LoRA: only the adapter tensors differ between teacher and student, so the teacher is a shadow
  of the trainable adapter tensors; for the teacher forward they are swapped into the student
  model and swapped back afterwards (the base weights are shared, memory stays ~1x).

Both keep the EMA state in float32 whatever the compute dtype (as the paper's code keeps its EMA
reference module in float32), and the teacher forward computes in the run's compute dtype
(bfloat16 under mixed precision, resd.train.precision). In bfloat16 an EMA step of
eta = 1e-4 would round away on almost every element; docs/algorithm.md says what it does in float32.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any, Iterator

import torch

from resd.train.precision import HALF, Precision
from resd.policy.tensors import copy_full_, full, local, reshard


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Name -> parameter for everything the optimiser updates (tied weights appear once)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _state_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in HALF else dtype


@torch.no_grad()
def ema_update_(teacher: list[torch.Tensor], student: list[torch.Tensor], rate: float) -> None:
    """In place: t <- (1 - rate) * t + rate * s for each pair (`lerp`, exact at rate 0 and 1).
    Sharded pairs are updated slice by slice on each rank."""
    if rate == 0.0 or not teacher:
        return
    if len(teacher) != len(student):
        raise ValueError(f"teacher has {len(teacher)} tensors, student {len(student)}")
    targets = [local(t) for t in teacher]
    converted = [local(s.detach()).to(dtype=t.dtype, device=t.device) for t, s in zip(targets, student)]
    torch._foreach_lerp_(targets, converted, rate)


class EMATeacher:
    """EMA copy of the student that scores teacher prompts without gradients."""

    def __init__(self, student: torch.nn.Module, rate: float, *, adapter_only: bool,
                 precision: Precision | None = None) -> None:
        self.rate = float(rate)
        self.adapter_only = adapter_only
        self._names = list(trainable_parameters(student))
        first = next(iter(trainable_parameters(student).values()), None)
        self.compute_dtype = precision.compute_dtype if precision is not None else (
            first.dtype if first is not None else torch.float32)
        if adapter_only:
            self.model: torch.nn.Module | None = None
            self.shadow = {name: p.detach().to(_state_dtype(p.dtype)).clone()
                           for name, p in trainable_parameters(student).items()}
        else:
            self.model = copy.deepcopy(student)
            self.model.eval()
            for p in self.model.parameters():
                p.requires_grad_(False)
            if any(p.dtype in HALF for p in self.model.parameters()):
                self.model.float()  # float32 EMA state even when the student is stored in half precision
            self.shadow = {}

    # -- the teacher forward ------------------------------------------------------------------------

    def _compute(self, device: torch.device):
        if self.compute_dtype not in HALF:
            return torch.autocast(device_type=device.type, enabled=False)
        return torch.autocast(device_type=device.type, dtype=self.compute_dtype)

    @contextmanager
    def weights_in(self, student: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """Yield a module that computes the teacher (its own copy, or the student with the
        teacher's adapter tensors swapped in for the duration of the block), in the run's
        compute dtype."""
        if self.model is not None:
            try:
                with self._compute(next(self.model.parameters()).device):
                    yield self.model
            finally:
                reshard(self.model)
            return
        reshard(student)
        params = trainable_parameters(student)
        saved = {name: local(params[name]).detach().clone() for name in self._names}
        try:
            with torch.no_grad():
                for name in self._names:
                    local(params[name]).copy_(local(self.shadow[name]))
            with self._compute(next(student.parameters()).device):
                yield student
        finally:
            with torch.no_grad():
                for name in self._names:
                    local(params[name]).copy_(saved[name])

    # -- the EMA step -------------------------------------------------------------------------------

    def update(self, student: torch.nn.Module) -> None:
        """theta_T <- (1 - eta) theta_T + eta theta (no-op at eta = 0)."""
        reshard(student)
        params = trainable_parameters(student)
        if self.model is not None:
            reshard(self.model)
            teacher_params = dict(self.model.named_parameters())
            ema_update_([teacher_params[n] for n in self._names], [params[n] for n in self._names], self.rate)
        else:
            ema_update_([self.shadow[n] for n in self._names], [params[n] for n in self._names], self.rate)

    def replace_model(self, model: torch.nn.Module) -> None:
        """Use `model` (the same copy, wrapped: resd.train.sharding shards it like the student)."""
        self.model = model

    # -- checkpointing --------------------------------------------------------------------------------

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The teacher's trainable-part tensors by student parameter name (what differs from the
        student's frozen part), whole, contiguous and detached for safetensors. Sharded: every
        rank must call this (the slices are gathered)."""
        if self.model is not None:
            teacher_params = dict(self.model.named_parameters())
            return {n: full(teacher_params[n].detach()).contiguous() for n in self._names}
        return {n: full(t.detach()).contiguous() for n, t in self.shadow.items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        missing = [n for n in self._names if n not in tensors]
        if missing:
            raise ValueError(f"teacher checkpoint lacks {len(missing)} tensors, e.g. {missing[0]}")
        targets = dict(self.model.named_parameters()) if self.model is not None else self.shadow
        for n in self._names:
            copy_full_(targets[n], tensors[n])

    def info(self) -> dict[str, Any]:
        return {"rate": self.rate, "adapter_only": self.adapter_only, "tensors": len(self._names)}
