"""Tensors that may be shards (FSDP2's DTensor parameters) handled like plain ones.

FSDP2 (`torch.distributed.fsdp.fully_shard`) turns each parameter into a DTensor whose local
part is this rank's slice of dimension 0. The EMA and the teacher swap work on the local slices
(the same elementwise update on every rank is the update of the whole tensor); checkpoints and
the generation engine need whole tensors, which `full` gathers (a collective: every rank calls
it) and `copy_full_` slices back.
"""

from __future__ import annotations

import torch


def is_sharded(t: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of `t` (a view that writes through), or `t` itself."""
    return t.to_local() if is_sharded(t) else t


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor (gathered from every rank when sharded: all ranks must call this)."""
    return t.full_tensor() if is_sharded(t) else t


@torch.no_grad()
def copy_full_(target: torch.Tensor, whole: torch.Tensor) -> None:
    """Write the whole tensor `whole` into `target`, or into this rank's slice of it when `target`
    is sharded (no communication: every rank holds `whole`)."""
    if is_sharded(target):
        from torch.distributed.tensor import distribute_tensor

        part = distribute_tensor(whole.to(target.device, target.dtype), target.device_mesh, target.placements,
                                 src_data_rank=None)
        local(target).copy_(part.to_local())
    else:
        target.copy_(whole.to(target.device, target.dtype))


def reshard(model: torch.nn.Module) -> None:
    """Put an FSDP2 model back into its sharded state. Groups that FSDP2 keeps gathered after a
    forward (accelerate's root and tail groups: reshard_after_forward=False) expose whole plain
    tensors as the module's parameters until a backward reshards them; a no-grad forward (the
    teacher's) has no backward, so the EMA and checkpoints reshard first to see the shards."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()
