"""Atomic writes: a file or a folder is either the old one or the complete new one, never half.

Everything resd persists (checkpoints, run logs' side files, playbooks, caches, saved weights)
goes through these helpers, so a kill at any moment leaves something loadable behind:

* `write_text_atomic` / `write_json_atomic`: write a temporary sibling, fsync it, rename it over
  the target (`os.replace` is atomic on POSIX), fsync the folder so the rename survives a crash.
* `replace_dir_atomic`: fill a temporary sibling folder, then swap it in. The previous folder is
  moved to `.NAME.old` first and deleted only once the new one is in place, so there is no
  moment without a complete copy (a reader falls back to `.old`, see `old_copy` and
  `resd.run.checkpoint.find_checkpoint`).

`read_jsonl` is the one reader of the JSON-lines logs these runs append to.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from resd.errors import UserError


def json_safe(value: Any) -> Any:
    """JSON-safe numbers (NaN/inf become null) so every file parses in any JSON reader."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # some filesystems do not open folders; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` to `path` (UTF-8) through a temporary sibling, fsync and rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """`write_text_atomic` of `data` as indented JSON (NaN/inf as null)."""
    write_text_atomic(path, json.dumps(json_safe(data), indent=2, ensure_ascii=False, default=str))


def _fsync_tree(folder: Path) -> None:
    for root, _dirs, names in os.walk(folder):
        for name in names:
            try:
                with open(os.path.join(root, name), "rb") as f:
                    os.fsync(f.fileno())
            except OSError:
                pass
        _fsync_dir(Path(root))


def _writer_alive(pid_text: str) -> bool:
    """Whether the process that named a temporary folder `.NAME.tmp<pid>` still runs (then its
    folder is work in progress, not a leftover)."""
    if not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists but is not ours to signal
    return True


def old_copy(path: Path) -> Path:
    """Where `replace_dir_atomic` keeps the previous folder until the new one is in place."""
    return path.with_name(f".{path.name}.old")


@contextmanager
def replace_dir_atomic(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary folder; when the block ends without an error it replaces `path`.

    On an error the temporary folder is removed and `path` is untouched. Leftover temporary
    folders of writers that died (same name pattern, process gone) are removed first.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.tmp*"):
        if not _writer_alive(stale.name.rsplit(".tmp", 1)[-1]):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = old_copy(target)
    if target.exists():
        # Keep the last complete copy: if `.old` is complete and `target` is not (a kill between
        # the renames below last time), the complete one is the one kept.
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
    os.replace(tmp, target)
    _fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def read_jsonl(path: Path, *, missing_ok: bool = False, skip_damaged: bool = False) -> list[dict[str, Any]]:
    """Read a JSON-lines log. A cut-off last line (run killed mid-write) is dropped; any other
    bad line is an error naming the file and line, or is skipped with `skip_damaged` (a resumed
    run keeps the lines after it). A missing file is an error, or no rows with `missing_ok`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return []
        raise UserError(f"{path} is missing: is {Path(path).parent} a run directory written by `resd train`?") from None
    rows: list[dict[str, Any]] = []
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            # Only the final line of a file without a trailing newline can be an interrupted write.
            if number == len(lines) and not text.endswith("\n"):
                break
            if skip_damaged:
                continue
            raise UserError(f"{path}:{number} is not valid JSON ({exc.msg}); fix or delete that line") from None
        if not isinstance(row, dict):
            if skip_damaged:
                continue
            raise UserError(f"{path}:{number} should be a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows
