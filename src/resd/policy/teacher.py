"""The self-teacher: an exponential moving average of the student (paper §3.3, Alg. 1 line 19).

    theta_T <- (1 - eta) * theta_T + eta * theta        after every policy update

eta = 0 keeps the initial model (ROSD); eta = 1 would be the live student. Two storages:

* full fine-tuning: a separate copy of the model (no grad, eval mode) whose parameters are lerped
  towards the student's; the teacher forward is a plain forward of that copy.
* LoRA: only the adapter tensors differ between teacher and student, so the teacher is a float32
  shadow of the trainable adapter tensors; for the teacher forward they are swapped into the
  student model and swapped back afterwards (the base weights are shared, memory stays ~1x).

Both keep the EMA in float32 when the model is in half precision, so that eta = 1e-4 is not
rounded away.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any, Iterator

import torch


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Name -> parameter for everything the optimiser updates (tied weights appear once)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def ema_update_(teacher: list[torch.Tensor], student: list[torch.Tensor], rate: float) -> None:
    """In place: t <- (1 - rate) * t + rate * s for each pair (`lerp`, exact at rate 0 and 1)."""
    if rate == 0.0 or not teacher:
        return
    if len(teacher) != len(student):
        raise ValueError(f"teacher has {len(teacher)} tensors, student {len(student)}")
    converted = [s.detach().to(dtype=t.dtype, device=t.device) for t, s in zip(teacher, student)]
    torch._foreach_lerp_(teacher, converted, rate)


class EMATeacher:
    """EMA copy of the student that scores teacher prompts without gradients."""

    def __init__(self, student: torch.nn.Module, rate: float, *, adapter_only: bool) -> None:
        self.rate = float(rate)
        self.adapter_only = adapter_only
        self._names = list(trainable_parameters(student))
        if adapter_only:
            self.model: torch.nn.Module | None = None
            self.shadow = {
                name: p.detach().to(torch.float32 if p.dtype in (torch.float16, torch.bfloat16) else p.dtype).clone()
                for name, p in trainable_parameters(student).items()
            }
        else:
            self.model = copy.deepcopy(student)
            self.model.eval()
            for p in self.model.parameters():
                p.requires_grad_(False)
            self.shadow = {}

    # -- the teacher forward ------------------------------------------------------------------------

    @contextmanager
    def weights_in(self, student: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """Yield a module that computes the teacher (its own copy, or the student with the
        teacher's adapter tensors swapped in for the duration of the block)."""
        if self.model is not None:
            yield self.model
            return
        params = trainable_parameters(student)
        saved = {name: params[name].detach().clone() for name in self._names}
        try:
            with torch.no_grad():
                for name in self._names:
                    params[name].copy_(self.shadow[name].to(params[name].dtype))
            yield student
        finally:
            with torch.no_grad():
                for name in self._names:
                    params[name].copy_(saved[name])

    # -- the EMA step -------------------------------------------------------------------------------

    def update(self, student: torch.nn.Module) -> None:
        """theta_T <- (1 - eta) theta_T + eta theta (no-op at eta = 0)."""
        params = trainable_parameters(student)
        if self.model is not None:
            teacher_params = dict(self.model.named_parameters())
            ema_update_([teacher_params[n] for n in self._names], [params[n] for n in self._names], self.rate)
        else:
            ema_update_([self.shadow[n] for n in self._names], [params[n] for n in self._names], self.rate)

    # -- checkpointing --------------------------------------------------------------------------------

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The teacher's trainable-part tensors by student parameter name (what differs from the
        student's frozen part), contiguous and detached for safetensors."""
        if self.model is not None:
            teacher_params = dict(self.model.named_parameters())
            return {n: teacher_params[n].detach().contiguous() for n in self._names}
        return {n: t.detach().contiguous() for n, t in self.shadow.items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        missing = [n for n in self._names if n not in tensors]
        if missing:
            raise ValueError(f"teacher checkpoint lacks {len(missing)} tensors, e.g. {missing[0]}")
        with torch.no_grad():
            if self.model is not None:
                teacher_params = dict(self.model.named_parameters())
                for n in self._names:
                    teacher_params[n].copy_(tensors[n])
            else:
                for n in self._names:
                    self.shadow[n].copy_(tensors[n])

    def info(self) -> dict[str, Any]:
        return {"rate": self.rate, "adapter_only": self.adapter_only, "tensors": len(self._names)}
