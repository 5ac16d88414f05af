"""`resd envs` (list environments and sizes) and `resd env show NAME` (one task and its Outcome)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from resd.envs.base import Environment, Outcome, Task
from resd.envs.text import printable
from resd.envs.registry import get, get_class, names
from resd.errors import UserError


# --- resd envs -----------------------------------------------------------------------------------

def add_arguments_envs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env-opt", action="append", default=[], metavar="NAME.K=V",
                        help="option for one environment while listing, e.g. finer.path=data/finer "
                             "(repeatable)")


def env_rows(env_names: list[str], options: dict[str, dict[str, Any]] | None = None) -> list[list[str]]:
    """[name, train, test, description] per environment; an environment that cannot be built
    (missing data file, missing dependency) gets its error in the size cells instead."""
    rows = []
    for name in env_names:
        try:
            cls = get_class(name)
            description = cls.description or (cls.__doc__ or "").strip().split("\n")[0]
        except UserError as exc:
            rows.append([name, "error", "error", str(exc)])
            continue
        try:
            sizes = get(name, **(options or {}).get(name, {})).sizes()
            rows.append([name, str(sizes["train"]), str(sizes["test"]), description])
        except Exception as exc:  # noqa: BLE001  (one broken environment must not hide the others)
            rows.append([name, "unavailable", "-", f"{description} [{_one_line(exc)}]"])
    return rows


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:160]


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    widths[-1] = 0  # the last column (descriptions) is not padded
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * max(w, len(h)) for w, h in zip(widths, header)]),
                      *map(line, rows)])


def run_envs(args: argparse.Namespace) -> int:
    per_env: dict[str, dict[str, Any]] = {}
    for item in args.env_opt:
        key, value = _parse_option(item)
        env_name, dot, option = key.rpartition(".")
        if not dot or not env_name:
            raise UserError(f"--env-opt {item!r}: write NAME.KEY=VALUE, e.g. finer.path=data/finer.jsonl")
        per_env.setdefault(env_name, {})[option] = value
    print(format_table(["name", "train", "test", "description"], env_rows(names(), per_env)))
    return 0


# --- resd env show ---------------------------------------------------------------------------------

def add_arguments_env(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="env_action", metavar="ACTION")
    show = actions.add_parser("show", help="print one task and the Outcome of a sample completion",
                              description="Print one task's prompt and metadata, then score a completion "
                                          "(given, or the environment's reference solution) and print the "
                                          "reward, per-test results and feedback.")
    show.add_argument("name", help="environment name (see `resd envs`) or module:Class")
    show.add_argument("--task", default=None, help="task id (default: the first task of the split)")
    show.add_argument("--split", choices=["train", "test"], default="train")
    show.add_argument("--completion", default=None, metavar="FILE",
                      help="text file with the completion to score ('-' reads standard input); "
                           "default: the environment's reference solution, if it has one")
    show.add_argument("--env-opt", action="append", default=[], metavar="K=V",
                      help="environment option, e.g. train_size=16 (repeatable; values are YAML)")
    show.add_argument("--ids", action="store_true", help="list the task ids of the split and exit")


def _parse_option(item: str) -> tuple[str, Any]:
    key, eq, raw = item.partition("=")
    if not eq or not key.strip():
        raise UserError(f"option {item!r} is not KEY=VALUE (e.g. train_size=16)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def summarize_meta(meta: dict[str, Any], width: int = 100) -> list[str]:
    """One line per meta key: short values in full, long ones as their size."""
    lines = []
    for key, value in meta.items():
        if isinstance(value, (list, tuple, dict)):
            shown = repr(value)
            if len(shown) > width:
                shown = f"{type(value).__name__} of {len(value)} item{'s' * (len(value) != 1)}"
        elif isinstance(value, str):
            first = value.strip().split("\n")[0]
            shown = repr(first if len(first) <= width else first[:width] + "...")
            if "\n" in value.strip():
                shown += f" ({value.count(chr(10)) + 1} lines)"
        else:
            shown = repr(value)
        lines.append(f"  {key}: {shown}")
    return lines


def render_show(env: Environment, task: Task, split: str, completion: str | None, source: str,
                outcome: Outcome | None) -> str:
    """The text `resd env show` prints; the completion and the feedback quoting it are model text,
    so what reaches the terminal is `printable` (no escape sequences, no carriage returns)."""
    return printable(_render_show(env, task, split, completion, source, outcome))


def _render_show(env: Environment, task: Task, split: str, completion: str | None, source: str,
                 outcome: Outcome | None) -> str:
    parts = [f"== {env.name} / {split} / {task.id}", "", "-- prompt"]
    for message in task.prompt:
        parts += [f"[{message.get('role', '?')}]", message.get("content", "")]
    parts += ["", "-- meta", *summarize_meta(task.meta)]
    if completion is None:
        parts += ["", f"-- no completion: {env.name} has no reference solution; pass --completion FILE"]
        return "\n".join(parts)
    parts += ["", f"-- completion ({source})", completion, "", "-- outcome"]
    assert outcome is not None
    n_pass = sum(outcome.passed)
    parts += [f"reward: {outcome.reward:g}   acc: {outcome.acc:.3f}   passed: {n_pass}/{len(outcome.passed)}"
              f"   solved: {outcome.solved}", "feedback:", outcome.feedback or "(none)"]
    return "\n".join(parts)


def _read_completion(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise UserError(f"cannot read --completion {path!r}: {exc.strerror}") from exc


def run_env(args: argparse.Namespace) -> int:
    if getattr(args, "env_action", None) != "show":
        raise UserError("usage: resd env show NAME [--task ID] [--split train|test] [--completion FILE|-]")
    options = dict(_parse_option(item) for item in args.env_opt)
    env = get(args.name, **options)
    tasks = env.tasks(args.split)
    if args.ids:
        print("\n".join(t.id for t in tasks))
        return 0
    if args.task is not None:
        task = env.task_by_id(args.task, args.split)
    elif tasks:
        task = tasks[0]
    else:
        raise UserError(f"{args.name} has no {args.split} tasks")
    if args.completion is not None:
        completion, source = _read_completion(args.completion), args.completion
    else:
        completion = env.reference_solution(task)
        source = "reference solution"
    outcome = env.score(task, completion) if completion is not None else None
    print(render_show(env, task, args.split, completion, source, outcome))
    if args.task is None:
        print(f"\n({len(tasks)} {args.split} tasks; pick one with --task ID, list them with --ids)")
    return 0
