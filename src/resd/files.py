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
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from resd.errors import UserError

MAX_JSON_INT_DIGITS = 64
"""Longest integer a resd JSON reader accepts: far above any count, step or seed resd writes, far
below the length where parsing an integer costs (Python refuses 4,300 digits with a ValueError)."""
MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays/objects a resd JSON reader accepts (resd writes at most a few)."""
MAX_RUN_FILE_BYTES = 1 << 30
"""Largest run-directory file (logs, states, snapshots) a resd reader loads into memory."""


class UnreadableFile(ValueError):
    """A file that is not a regular file, too large, not UTF-8, or not the JSON it should be."""


def read_regular_bytes(path: str | os.PathLike[str], max_bytes: int = MAX_RUN_FILE_BYTES) -> bytes:
    """The bytes of `path`, which must be a regular file of at most `max_bytes`.

    Opened without blocking, so a FIFO, socket or device in its place is refused at once instead
    of hanging the reader; the type is checked on the opened descriptor (no check-then-open race).
    Raises FileNotFoundError when it does not exist and UnreadableFile for everything else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise UnreadableFile(f"{path}: cannot be opened ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableFile(f"{path}: not a regular file")
        if info.st_size > max_bytes:
            raise UnreadableFile(f"{path}: larger than {max_bytes} bytes")
        chunks, size = [], 0
        while chunk := os.read(fd, min(1 << 20, max_bytes + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise UnreadableFile(f"{path}: larger than {max_bytes} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_regular_text(path: str | os.PathLike[str], max_bytes: int = MAX_RUN_FILE_BYTES) -> str:
    """`read_regular_bytes` decoded as UTF-8 (UnreadableFile when it is not)."""
    try:
        return read_regular_bytes(path, max_bytes).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_JSON_INT_DIGITS:
        raise UnreadableFile(f"an integer of {len(text)} digits (at most {MAX_JSON_INT_DIGITS})")
    return int(text)


def _depth_at_most(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > limit:
                return False
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return True


def loads_bounded(text: str | bytes) -> Any:
    """`json.loads` for text resd did not necessarily write itself (run directories, model
    answers): integers longer than MAX_JSON_INT_DIGITS and nesting deeper than MAX_JSON_DEPTH are
    refused (NaN/Infinity, which Python's own writer emits, are read). Every failure is
    UnreadableFile (a ValueError), never another error."""
    try:
        value = json.loads(text, parse_int=_bounded_int)
    except UnreadableFile:
        raise
    except RecursionError:
        raise UnreadableFile(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, TypeError) as exc:  # JSONDecodeError, bad UTF-8 in bytes
        raise UnreadableFile(str(exc)[:200]) from None
    if not _depth_at_most(value, MAX_JSON_DEPTH):
        raise UnreadableFile(f"nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def require_regular_file(path: str | os.PathLike[str]) -> Path:
    """`path`, after checking that it is (or links to) a regular file: for readers that open it
    themselves (safetensors, torch.load), which would block on a FIFO or read a device forever."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise UnreadableFile(f"{path}: cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        raise UnreadableFile(f"{path}: not a regular file")
    return Path(path)


def read_json_file(path: str | os.PathLike[str], max_bytes: int = MAX_RUN_FILE_BYTES) -> Any:
    """A regular file's JSON, bounded (`read_regular_text` + `loads_bounded`)."""
    return loads_bounded(read_regular_text(path, max_bytes))


def cache_dir(kind: str) -> Path:
    """resd's cache folder for one kind of derived data (`models`, `bouncingsim`):
    `$RESD_CACHE_DIR/<kind>`, else `$XDG_CACHE_HOME/resd/<kind>`, else `~/.cache/resd/<kind>`.
    Everything there can be rebuilt; readers treat a bad entry as a miss."""
    base = os.environ.get("RESD_CACHE_DIR")
    if base:
        return Path(base).expanduser() / kind
    xdg = os.environ.get("XDG_CACHE_HOME")
    root = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return root / "resd" / kind


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


def _process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, Linux's /proc/PID/stat field 22), or
    None when it does not exist or the system does not say."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat_line = f.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = stat_line.rsplit(")", 1)[-1].split()  # the command name in (...) may hold spaces
    return fields[19] if len(fields) > 19 and fields[19].isdigit() else None


def _writer_tag() -> str:
    """This process as the writer of a temporary folder: `<pid>-<start time>`, so that a later
    process that happens to get the same pid is not mistaken for it."""
    return f"{os.getpid()}-{_process_start(os.getpid()) or 0}"


def _writer_alive(tag: str) -> bool:
    """Whether the process that named a temporary folder `.NAME.tmp<pid>-<start>` still runs (then
    its folder is work in progress, not a leftover). Anything else after `.tmp` (another name, a
    pid alone, a pid now held by a process that started later) is a leftover."""
    pid_text, _, start = tag.partition("-")
    if not (pid_text.isdigit() and start.isdigit()) or len(pid_text) > 12 or int(pid_text) == os.getpid():
        return False
    now = _process_start(int(pid_text))
    if now is not None or os.path.isdir("/proc/self"):
        return now is not None and now == start
    try:  # no /proc (macOS): the pid alone
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists but is not ours to signal
    return True


def _remove_leftover(path: Path) -> None:
    """Remove a leftover folder, or whatever else sits under its name (a file, a link: never
    followed)."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


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
        if not _writer_alive(stale.name[len(target.name) + 5:]):
            _remove_leftover(stale)
    tmp = target.with_name(f".{target.name}.tmp{_writer_tag()}")
    _remove_leftover(tmp)
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
        text = read_regular_text(path)
    except FileNotFoundError:
        if missing_ok:
            return []
        raise UserError(f"{path} is missing: is {Path(path).parent} a run directory written by `resd train`?") from None
    except UnreadableFile as exc:  # a FIFO, a device, a huge or non-UTF-8 file in a run directory
        raise UserError(f"cannot read {exc}") from None
    rows: list[dict[str, Any]] = []
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = loads_bounded(line)  # run directories are not trusted input: no 5,000-digit integers
        except UnreadableFile as exc:
            # Only the final line of a file without a trailing newline can be an interrupted write.
            if number == len(lines) and not text.endswith("\n"):
                break
            if skip_damaged:
                continue
            raise UserError(f"{path}:{number} is not valid JSON ({str(exc)[:120]}); fix or delete that line") from None
        if not isinstance(row, dict):
            if skip_damaged:
                continue
            raise UserError(f"{path}:{number} should be a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows
