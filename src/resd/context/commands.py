"""`resd playbook show PATH`: print a saved playbook as a table (sections, counts, ages).

PATH may be a playbook JSON (`Playbook.save`), a context-updater state (a run's
playbooks/step_NNNNNN.json or checkpoint context), a run directory or its playbooks/ folder
(the latest snapshot is shown).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from resd.context.playbook import Playbook, read_json
from resd.envs.text import printable
from resd.errors import UserError

SORT_KEYS = ("id", "section", "helpful", "harmful", "age", "last-tagged")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="playbook_command", metavar="ACTION")
    show = sub.add_parser("show", help="print a playbook as a table",
                          description="Print a saved playbook: sections, entries, helpful/harmful counts and ages.")
    show.add_argument("path", metavar="PATH",
                      help="playbook .json, a run's playbooks/step_NNNNNN.json, a run directory or its playbooks/ folder")
    show.add_argument("--section", help="only entries of this section")
    show.add_argument("--example", help="per-example playbooks: only this example id")
    show.add_argument("--sort", choices=SORT_KEYS, default="section",
                      help="row order (default: by section, then id)")


def resolve_path(path: str | Path) -> Path:
    """A JSON file, or the newest step_*.json of a run directory / playbooks folder."""
    p = Path(path)
    if p.is_dir():
        folder = p / "playbooks" if (p / "playbooks").is_dir() else p
        snaps = sorted(folder.glob("step_*.json"))
        if not snaps:
            raise UserError(f"{p} holds no playbook snapshots (expected playbooks/step_NNNNNN.json)")
        return snaps[-1]
    if not p.exists():
        raise UserError(f"no such file or directory: {p}")
    return p


def playbooks_from_state(state: Any) -> dict[str, Playbook]:
    """Label -> playbook for any saved format ('' labels the global playbook)."""
    if isinstance(state, dict) and isinstance(state.get("playbook"), dict):  # updater state
        state = state["playbook"]
    if isinstance(state, dict) and isinstance(state.get("playbooks"), dict):  # per-example scope
        return {str(k): Playbook.from_state_dict(v) for k, v in state["playbooks"].items()}
    return {"": Playbook.from_state_dict(state)}


def _rows(book: Playbook, *, now: int, section: str | None, sort: str) -> list[dict[str, Any]]:
    rows = []
    for e in book.entries():
        if section and e.section != section:
            continue
        rows.append({"id": e.id, "section": e.section, "helpful": e.helpful, "harmful": e.harmful,
                     "created": e.created_step, "last-tagged": e.last_tagged_step,
                     "age": now - e.created_step, "category": e.category, "content": e.content})
    order = {s: i for i, s in enumerate(book.sections())}
    keys = {
        "id": lambda r: r["id"],
        "section": lambda r: (order.get(r["section"], 0), r["id"]),
        "helpful": lambda r: (-r["helpful"], r["id"]),
        "harmful": lambda r: (-r["harmful"], r["id"]),
        "age": lambda r: (-r["age"], r["id"]),
        "last-tagged": lambda r: (-1 if r["last-tagged"] is None else r["last-tagged"], r["id"]),
    }
    return sorted(rows, key=keys[sort])


def _current_step(path: Path, book: Playbook) -> int:
    """The snapshot's step (from its file name), else the latest step recorded in the entries."""
    m = re.fullmatch(r"step_(\d+)\.json", path.name)
    steps = [e.created_step for e in book.entries()] + [e.last_tagged_step or 0 for e in book.entries()]
    return int(m.group(1)) if m else max(steps, default=0)


def shown(text: str) -> "Text":
    """Model-written text (curator notes, ids, sections) as rich shows it: literally (a note holding
    "[/b]" is not markup) and `printable` (no terminal escape sequences or control characters)."""
    from rich.text import Text

    return Text(printable(text))


def run(args: argparse.Namespace) -> int:
    if getattr(args, "playbook_command", None) != "show":
        raise UserError("say what to do: `resd playbook show PATH`")
    from rich.console import Console
    from rich.table import Table

    path = resolve_path(args.path)
    books = playbooks_from_state(read_json(path))
    if args.example is not None:
        if args.example not in books:
            raise UserError(f"no playbook for example {args.example!r} in {path}; "
                            f"it has {len(books)} (e.g. {', '.join(list(books)[:5])})")
        books = {args.example: books[args.example]}
    console = Console()
    if not console.is_terminal:  # piped output: do not squeeze the content column into 80 columns
        console = Console(width=160)
    console.print(shown(str(path)), style="bold")
    for label, book in books.items():
        now = _current_step(path, book)
        cats = [e.category for e in book.entries()]
        title = (f"{'example ' + label + ': ' if label else ''}{len(book)} entries in "
                 f"{len(book.sections())} sections (helpful {cats.count('helpful')}, harmful "
                 f"{cats.count('harmful')}, unused {cats.count('unused')}); step {now}")
        table = Table(title=shown(title), title_justify="left", show_lines=False)
        table.add_column("id", no_wrap=True)
        table.add_column("section", no_wrap=True)
        for name in ("helpful", "harmful", "created", "tagged", "age"):
            table.add_column(name, justify="right", no_wrap=True)
        table.add_column("content", ratio=1, overflow="fold")
        for r in _rows(book, now=now, section=args.section, sort=args.sort):
            table.add_row(shown(r["id"]), shown(r["section"]), str(r["helpful"]), str(r["harmful"]), str(r["created"]),
                          "-" if r["last-tagged"] is None else str(r["last-tagged"]), str(r["age"]),
                          shown(r["content"]))
        console.print(table)
    return 0
