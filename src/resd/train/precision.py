"""Which dtype the weights are kept in and which one the forward/backward computes in.

The paper's runs (App. G, verl's FSDP trainer) keep the actor in float32 and compute in bfloat16
through FSDP's `MixedPrecision`: the optimiser updates float32 master weights, so an lr 1e-6 step
that is far below bfloat16's resolution (8 mantissa bits: a weight of 0.02 moves in steps of
~1.2e-4) still accumulates. Training bf16 parameters directly loses nearly every such update.

    dtype: bfloat16, mixed_precision: true  (the default)
        master weights, gradients, AdamW state and the EMA teacher in float32;
        forward/backward in bfloat16 (accelerate's `mixed_precision="bf16"`: torch.autocast without
        sharding, FSDP2's MixedPrecisionPolicy(param_dtype=bf16) with it)
    dtype: bfloat16, mixed_precision: false
        the weights themselves are bfloat16 (half the memory; updates at lr 1e-6 mostly vanish)
    dtype unset
        float32 on a CPU; on a GPU the checkpoint's own dtype, which for a half-precision
        checkpoint means float32 masters with compute in that dtype (mixed precision)
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, ContextManager

import torch

from resd.errors import UserError

HALF = (torch.float16, torch.bfloat16)

_ACCELERATE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass(frozen=True)
class Precision:
    """Storage and compute dtypes of a run."""

    param_dtype: torch.dtype
    """What the trainable weights (and so gradients and AdamW state) are stored in."""
    compute_dtype: torch.dtype
    """What the forward and backward compute in (the generation engine's dtype too)."""

    @property
    def mixed(self) -> bool:
        return self.param_dtype != self.compute_dtype

    @property
    def accelerate_name(self) -> str:
        """accelerate's `mixed_precision` argument: "no", "bf16" or "fp16"."""
        return _ACCELERATE_NAMES[self.compute_dtype] if self.mixed else "no"

    @property
    def name(self) -> str:
        """How the run records it: "float32", "bfloat16", or "float32 master / bfloat16 compute"."""
        param, compute = (str(d).replace("torch.", "") for d in (self.param_dtype, self.compute_dtype))
        return f"{param} master / {compute} compute" if self.mixed else param

    def autocast(self, device: Any) -> ContextManager[Any]:
        """Compute in `compute_dtype` inside the block (a no-op when nothing is mixed)."""
        if not self.mixed:
            return nullcontext()
        return torch.autocast(device_type=torch.device(device).type, dtype=self.compute_dtype)


def parse_dtype(name: str) -> torch.dtype:
    resolved = getattr(torch, name, None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise UserError(f"unknown dtype {name!r}; use float32, bfloat16, float16 or auto")
    return resolved


def resolve_precision(dtype: str | None, mixed_precision: bool, model: str, device: Any) -> Precision:
    """The run's precision from the config's `dtype` and `mixed_precision` and where it runs.

    `dtype` None: float32 on a CPU, the checkpoint's own dtype on a GPU; "auto": the checkpoint's
    own dtype anywhere. A half-precision dtype with `mixed_precision` gives float32 masters."""
    device = torch.device(device)
    if dtype is None and device.type == "cpu" or dtype == "float32":
        wanted = torch.float32
    elif dtype is None or dtype == "auto":
        from resd.models import checkpoint_dtype

        wanted = checkpoint_dtype(model) or torch.float32
    else:
        wanted = parse_dtype(dtype)
    if wanted not in HALF:
        return Precision(wanted, wanted)
    if not mixed_precision:
        return Precision(wanted, wanted)
    if wanted == torch.float16 and device.type == "cpu":
        raise UserError("dtype float16 with mixed_precision needs a GPU (CPUs compute half precision in "
                        "bfloat16); use dtype: bfloat16")
    return Precision(torch.float32, wanted)


def to_masters(model: torch.nn.Module, precision: Precision) -> torch.nn.Module:
    """Cast a model's floating-point weights to the storage dtype (in place; returns it)."""
    if any(p.dtype != precision.param_dtype for p in model.parameters() if p.is_floating_point()):
        model.to(dtype=precision.param_dtype)
    return model


def run_device() -> torch.device:
    """Where a run's model lives before accelerate places it: the GPU when there is one."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run_precision(cfg: Any) -> Precision:
    """The precision of the run `cfg` (a RESDConfig) describes, on this machine."""
    return resolve_precision(cfg.dtype, cfg.mixed_precision, cfg.model, run_device())


def load_dtype(precision: Precision, *, lora: bool) -> torch.dtype:
    """The dtype to load a model in. LoRA trains only its adapters, which PEFT creates in float32
    next to half-precision base weights, so the frozen base stays in the compute dtype (half the
    memory of float32 copies that nothing updates); full fine-tuning loads the masters."""
    return precision.compute_dtype if lora and precision.mixed else precision.param_dtype
