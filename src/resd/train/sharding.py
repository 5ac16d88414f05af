"""How a run is spread over processes: one process, DDP, or FSDP2 (parameters sharded).

The launcher decides, as accelerate users expect: `accelerate launch --config_file <FSDP config
with fsdp_version: 2>` shards with torch's `fully_shard` (FSDP2) through accelerate's FSDP plugin,
any other multi-process launch (torchrun, `--multi_gpu`, `--cpu --num_processes N`) is DDP. On a
machine without a GPU accelerate would quietly turn an FSDP launch into DDP over gloo; resd runs
FSDP2 over gloo instead, so the file a GPU cluster uses is tested on CPU ranks. What resd does not
implement (DeepSpeed, Megatron-LM, FSDP version 1) is one error line, never a silent fallback.

Under FSDP2 (the paper's actor is FSDP-sharded in verl):
* the student and the full-fine-tuning EMA teacher are sharded alike (`shard_teacher`); the EMA
  and the LoRA teacher swap work on each rank's slices (resd.policy.tensors);
* every rank keeps a plain, unsharded copy of the student in the compute dtype (`local_replica`)
  for what runs on one rank or a different number of times per rank: rollouts (each rank samples
  its own prompts, so ranks would make different numbers of forward calls through a sharded
  model and deadlock), evaluation, the probe and the context engine's generation (rank 0). The
  generation engine's `sync` after every update copies the gathered weights into it, as it
  pushes them into vLLM. Its cost is one compute-dtype copy of the weights per rank, what a vLLM
  engine per rank holds anyway;
* checkpoints gather whole float32 tensors and the optimiser's full state
  (torch.distributed.checkpoint's state-dict API) and resume exactly.
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from resd.errors import UserError
from resd.train.precision import Precision, run_precision
from resd.policy.tensors import copy_full_, full

STRATEGIES = ("single", "ddp", "fsdp2")
"""What `strategy` in config.yaml may say: one process, data parallel, or FSDP2 sharding."""


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "false").strip().lower() in ("1", "true", "yes")


def launcher_fsdp_version(env: Mapping[str, str]) -> int | None:
    """The FSDP version the accelerate launcher asked for (None: no FSDP); one UserError for a
    launcher setting resd does not honour."""
    if _flag(env, "ACCELERATE_USE_DEEPSPEED"):
        raise UserError("the accelerate config asks for DeepSpeed, which resd does not support (its sampling runs "
                        "under inference_mode and it takes no data loader); use an FSDP config with fsdp_version: 2 "
                        "(accelerate/fsdp2.yaml) for sharding, or --multi_gpu for DDP")
    if _flag(env, "ACCELERATE_USE_MEGATRON_LM"):
        raise UserError("the accelerate config asks for Megatron-LM, which resd does not support; use an FSDP config "
                        "with fsdp_version: 2 (accelerate/fsdp2.yaml)")
    if not _flag(env, "ACCELERATE_USE_FSDP"):
        return None
    version = env.get("FSDP_VERSION", "1").strip()
    if version != "2":
        raise UserError(f"the accelerate config asks for FSDP version {version}; resd shards with FSDP2 only: set "
                        f"fsdp_version: 2 in its fsdp_config (accelerate/fsdp2.yaml)")
    return 2


def check_launcher_precision(env: Mapping[str, str], precision: Precision) -> None:
    """A launcher's --mixed_precision bf16/fp16 must agree with the config's dtype (the one home of
    precision). "no" is accelerate's default and every launch sets it: the config decides then."""
    asked = env.get("ACCELERATE_MIXED_PRECISION", "").strip().lower()
    if asked not in ("", "no") and asked != precision.accelerate_name:
        raise UserError(f"the launcher asks for mixed_precision={asked} but the config gives {precision.accelerate_name!r} "
                        f"({precision.name}); set the config's dtype (e.g. dtype: bfloat16 for bf16) and launch with "
                        f"--mixed_precision {precision.accelerate_name}, or leave it out")


def fsdp2_plugin(precision: Precision) -> Any:
    """accelerate's FSDP plugin for FSDP2, its other settings from the launcher's environment;
    under mixed precision parameters are gathered in the compute dtype while gradients are reduced
    and outputs returned in float32 (the losses are computed in float32, as without sharding)."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin(fsdp_version=2)
    if precision.mixed:
        from torch.distributed.fsdp import MixedPrecisionPolicy

        plugin.mixed_precision_policy = MixedPrecisionPolicy(param_dtype=precision.compute_dtype,
                                                             reduce_dtype=torch.float32, output_dtype=torch.float32)
    return plugin


def build_accelerator(cfg: Any, run_root: Path | None, env: Mapping[str, str] | None = None) -> Any:
    """The run's `accelerate.Accelerator` with the strategy the launcher asked for (see above);
    records it in `cfg.strategy` and prints it on the main process before anything else."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import DistributedType

    env = os.environ if env is None else env
    precision = run_precision(cfg)
    check_launcher_precision(env, precision)
    version = launcher_fsdp_version(env)
    plugin = fsdp2_plugin(precision) if version == 2 else None
    # cpu=True on machines without a GPU: accelerate then forms a gloo process group when launched
    # with several processes (torchrun, `accelerate launch --multi_gpu`, or `accelerate launch
    # --cpu`, whose single process `resd train` turns into N ranks: resd/train/launch.py).
    on_cpu = not torch.cuda.is_available() and not torch.backends.mps.is_available()
    # accelerate keeps one AcceleratorState per process and refuses a second Accelerator with another
    # mixed precision. Each run builds its own, and one process may run several (resd compare, the
    # benchmarks, tests: a bf16 run then a float32 one), so the previous run's accelerator-level
    # state is dropped first; the process group (PartialState) stays.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    accelerator = Accelerator(cpu=on_cpu, log_with=cfg.report_to or None, mixed_precision=precision.accelerate_name,
                              fsdp_plugin=plugin, project_dir=str(run_root) if run_root else None)
    if plugin is not None and accelerator.distributed_type == DistributedType.MULTI_CPU:
        # accelerate keeps FSDP to accelerators; torch's fully_shard runs over gloo as it does over NCCL.
        state = AcceleratorState()
        state.distributed_type = DistributedType.FSDP
        state.fsdp_plugin = plugin
    if plugin is not None and not accelerator.is_fsdp2:
        raise UserError("the accelerate config asks for FSDP2, which shards over several processes; this launch has "
                        f"{accelerator.num_processes}: launch with num_processes >= 2, or without the FSDP config")
    strategy = strategy_of(accelerator)
    if cfg.strategy is not None and cfg.strategy != strategy:
        raise UserError(f"the config says strategy: {cfg.strategy} but this launch gives {strategy}; launch as the run "
                        f"was (FSDP2: accelerate launch --config_file accelerate/fsdp2.yaml), or remove the line")
    cfg.strategy = strategy
    if accelerator.is_main_process:
        print(f"resd: strategy: {describe(accelerator, precision)}", file=sys.stderr, flush=True)
    return accelerator


@contextlib.contextmanager
def prepared_for_a_moment(accelerator: Any) -> Iterator[None]:
    """Models and optimisers prepared inside the block are forgotten by `accelerator` when it ends
    (the update probe's throw-away copies). `Accelerator.free_memory` would also forget the run's own
    model, which FSDP's gradient clipping looks up there; this restores the lists as they were."""
    kept = {name: list(getattr(accelerator, name)) for name in ("_models", "_optimizers", "_schedulers")}
    try:
        yield
    finally:
        for name, objects in kept.items():
            setattr(accelerator, name, objects)


def strategy_of(accelerator: Any) -> str:
    if accelerator.is_fsdp2:
        return "fsdp2"
    return "ddp" if accelerator.num_processes > 1 else "single"


def describe(accelerator: Any, precision: Precision) -> str:
    """One line: strategy, processes and their backend, device, precision."""
    strategy = strategy_of(accelerator)
    group = ""
    if accelerator.num_processes > 1:
        import torch.distributed as dist

        group = f" over {accelerator.num_processes} processes ({dist.get_backend()})"
    return f"{strategy}{group} on {accelerator.device.type}, {precision.name}"


def sharded(accelerator: Any) -> bool:
    return bool(getattr(accelerator, "is_fsdp2", False))


def local_replica(model: torch.nn.Module, precision: Precision) -> torch.nn.Module:
    """A plain copy of `model` (taken before sharding) in the compute dtype, for rank-local work."""
    replica = copy.deepcopy(model)
    replica.to(dtype=precision.compute_dtype)
    replica.eval()
    for p in replica.parameters():
        p.requires_grad_(False)
    return replica


def shard_teacher(accelerator: Any, teacher: Any, student: torch.nn.Module) -> None:
    """Shard the EMA teacher as accelerate sharded the student: the full-fine-tuning copy with the
    same plugin (wrap policy, mesh, mixed precision), a LoRA teacher's float32 shadow tensors
    sliced exactly as the student's adapter parameters are."""
    if teacher is None:
        return
    if teacher.model is not None:
        from accelerate.utils.fsdp_utils import fsdp2_prepare_model

        teacher.replace_model(fsdp2_prepare_model(accelerator, teacher.model))
        return
    from torch.distributed.tensor import distribute_tensor

    from resd.policy.teacher import trainable_parameters

    params = trainable_parameters(student)
    teacher.shadow = {name: distribute_tensor(t.to(params[name].device), params[name].device_mesh,
                                              params[name].placements, src_data_rank=None)
                      for name, t in teacher.shadow.items()}


@torch.no_grad()
def copy_trainable_(source: torch.nn.Module, target: torch.nn.Module) -> None:
    """target's copies of source's trainable tensors <- source's (gathered when sharded: every
    rank calls this, in the same order)."""
    targets = dict(target.named_parameters())
    for name, p in source.named_parameters():
        if p.requires_grad:
            copy_full_(targets[name], full(p.detach()))
