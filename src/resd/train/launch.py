"""Several CPU processes from `accelerate launch --cpu --num_processes N`.

accelerate starts CPU ranks only through MPI: without `--mpirun_hostfile`, `accelerate launch --cpu
--num_processes 2 script` runs the script *once*, with MASTER_ADDR/MASTER_PORT set but no rank or
world size, and the script would silently train in one process. `resd train` notices that
situation, reads N from the launcher's own command line (with accelerate's own argument parser)
and starts the N ranks itself with PyTorch's elastic launcher (what `torchrun` runs), on the
address and port accelerate chose. Every other way of launching is left alone.
"""

from __future__ import annotations

import os
import sys
from typing import Mapping, Sequence

from resd.errors import UserError

# Variables that say this process already is one rank of a group (torchrun, accelerate's own
# multi-process launchers, MPI).
RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE",
                  "PMIX_RANK")


def started_by_accelerate_cpu_without_ranks(env: Mapping[str, str]) -> bool:
    """True when accelerate's single-process launcher started us for CPU with several processes
    requested: it sets MASTER_ADDR only when num_processes (or num_machines) > 1."""
    use_cpu = env.get("ACCELERATE_USE_CPU", "").strip().lower() in ("1", "true", "yes")
    return use_cpu and "MASTER_ADDR" in env and not any(name in env for name in RANK_VARIABLES)


def requested_processes(launcher_argv: Sequence[str]) -> tuple[int | None, int]:
    """(num_processes, num_machines) from an `accelerate launch ...` command line, as accelerate
    itself parses it (a config file fills what the flags leave out); num_processes None if unknown."""
    args = list(launcher_argv)
    if "launch" not in args:
        return None, 1
    from accelerate.commands.launch import launch_command_parser

    parsed, _ = launch_command_parser().parse_known_args(args[args.index("launch") + 1:])
    processes, machines = parsed.num_processes, parsed.num_machines
    kind = "FSDP" if parsed.use_fsdp else "DEEPSPEED" if parsed.use_deepspeed else None
    if parsed.config_file:
        from accelerate.commands.config.config_args import load_config_from_file

        defaults = load_config_from_file(parsed.config_file)
        processes = processes if processes is not None else defaults.num_processes
        machines = machines if machines is not None else defaults.num_machines
        kind = kind or str(getattr(defaults, "distributed_type", "")).split(".")[-1].upper()
    if kind in ("FSDP", "DEEPSPEED", "MEGATRON_LM"):
        # accelerate's CPU launcher drops these settings without a word; resd would then run DDP
        raise UserError(f"accelerate launch --cpu ignores the config's {kind} settings (it starts its CPU launcher, "
                        f"which knows no sharding); drop --cpu / use_cpu: without a GPU resd runs FSDP2 over gloo "
                        f"(accelerate launch --config_file accelerate/fsdp2.yaml)")
    return (int(processes) if processes is not None else None), int(machines or 1)


def parent_command_line() -> list[str]:
    import psutil  # a dependency of accelerate

    try:
        return psutil.Process(os.getppid()).cmdline()
    except (psutil.Error, OSError):
        return []


def cpu_ranks_to_start(env: Mapping[str, str] | None = None, launcher_argv: Sequence[str] | None = None) -> int:
    """How many ranks `resd train` must start itself: 0 when it was launched any other way."""
    env = os.environ if env is None else env
    if not started_by_accelerate_cpu_without_ranks(env):
        return 0
    argv = parent_command_line() if launcher_argv is None else launcher_argv
    processes, machines = requested_processes(argv)
    if machines > 1:
        raise UserError("accelerate launch --cpu across several machines needs an MPI hostfile "
                        "(--mpirun_hostfile); on one machine use --num_machines 1")
    if processes is None:
        raise UserError("accelerate launch --cpu asked for several processes but started only this one, and the "
                        "process count could not be read from the launcher; run `accelerate launch --multi_gpu "
                        "--num_processes N -m resd.cli train ...` (works on a CPU) or `torchrun --nproc_per_node N "
                        "-m resd.cli train ...`")
    return processes if processes > 1 else 0


def start_cpu_ranks(n: int, resd_argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run `python -m resd.cli <resd_argv>` as n ranks on this machine and wait; the exit code."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    env = os.environ if env is None else env
    print(f"resd: accelerate launch --cpu started one process for {n}; starting {n} CPU ranks with torch.distributed.run",
          file=sys.stderr, flush=True)
    args = get_args_parser().parse_args([
        "--nnodes", "1", "--nproc_per_node", str(n),
        "--master_addr", env.get("MASTER_ADDR", "127.0.0.1"), "--master_port", env.get("MASTER_PORT", "29500"),
        "-m", "resd.cli", *resd_argv])
    try:
        run(args)
    except ChildFailedError as exc:
        print(f"resd: a rank failed: {exc}", file=sys.stderr)
        return 1
    return 0
