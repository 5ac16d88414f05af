"""The `resd` command. Commands only: each subcommand lives in the module that owns its logic.

A command module provides `add_arguments(parser)` and `run(args) -> int`; it is imported only
when its command runs, so `resd --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from resd.errors import UserError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "eval": ("resd.eval.evaluate", "sample k responses per test task and report mean@k / best@k"),
    "envs": ("resd.envs.commands", "list the environments and their sizes"),
    "env": ("resd.envs.commands", "inspect one environment (`resd env show NAME`)"),
    "train": ("resd.train.commands", "train with RESD, SDPO, SDPO+ss, ROSD or GRPO from a YAML config"),
    "playbook": ("resd.context.commands", "inspect a saved playbook (`resd playbook show PATH`)"),
    "probe": ("resd.experiments.probe", "does the teacher know more than the student? teacher advantage per prompt slot"),
    "icl": ("resd.experiments.icl", "in-context learning: grow a playbook without weight updates, then evaluate"),
    "compare": ("resd.experiments.compare", "run several methods on the same stream and write a report"),
    "report": ("resd.report", "rebuild a comparison report from saved run directories"),
    "solve": ("resd.experiments.solve", "test-time self-distillation on one hard task"),
    "bench": ("resd.experiments.bench", "benchmarks that ship with the CLI (`resd bench discovery`)"),
}


def _command_module(name: str):
    module_name = COMMANDS[name][0]
    module = importlib.import_module(module_name)
    # A module that serves several commands (envs/env) exposes add_arguments_<name>/run_<name>.
    add = getattr(module, f"add_arguments_{name}", None) or module.add_arguments
    run = getattr(module, f"run_{name}", None) or module.run
    return add, run


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resd",
        description="Learn from environment feedback with on-policy self-distillation (RESD, SDPO, ROSD, GRPO).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = None
    if argv:
        wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        # Only the chosen command's module is imported (keeps `resd --help` fast and robust).
        if name == wanted:
            add, _run = _command_module(name)
            add(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        args.argv = argv  # a command that re-launches itself (train on several CPU ranks) needs it
        if not args.command:
            parser.print_help()
            return 0
        _add, run = _command_module(args.command)
        return int(run(args) or 0)
    except UserError as exc:
        print(f"resd: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("resd: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
