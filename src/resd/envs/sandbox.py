"""Run untrusted Python (model-written programs) in a separate, limited process.

    >>> from resd.envs.sandbox import run_python, SandboxPool, SandboxJob
    >>> r = run_python("print(input()[::-1])", stdin="abc\\n", wall_time=5)
    >>> r.stdout, r.exit_code, r.limit
    ('cba\\n', 0, None)
    >>> with SandboxPool(workers=4) as pool:
    ...     results = pool.map([SandboxJob(code=f"print({i}*{i})") for i in range(8)])

What a program can do (only the standard library is importable):
- read its stdin, the files passed in `files`, and the standard library; write, create and
  delete only inside its own fresh temporary working directory (also its HOME and TMPDIR);
- print at most `max_output_bytes` to each of stdout and stderr.
What stops it (and the `limit` reported):
- "wall_time": the process group is killed after `wall_time` seconds;
- "cpu_time":  RLIMIT_CPU (SIGXCPU, then SIGKILL one second later);
- "memory":    RLIMIT_AS, seen as a MemoryError;
- "output":    more than `max_output_bytes` on stdout or stderr, or a file over `max_file_bytes`;
- "forbidden": starting processes (fork, exec, os.system, subprocess), sockets, native code
  (ctypes), signals to other processes, changing limits, writing outside the working directory,
  reading outside it and the standard library. The program is stopped at the first attempt and
  stderr names what was blocked.

Layers: the environment is empty except PATH, LANG, HOME, TMPDIR; when resd runs as root (as in
containers) the child also runs as user `nobody` (so the kernel enforces "no new processes" and
file permissions) inside a fresh network namespace with no interfaces (`unshare -n`); an audit
hook (PEP 578) installed before the program starts (`_sandbox_boot.py`) enforces the rules
above in every case. `isolation()` says which layers are active on this machine.

Not a defence against kernel exploits; it contains buggy, greedy or mischievous programs, the
kind a policy writes while learning.
"""

from __future__ import annotations

import functools
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal

Limit = Literal["wall_time", "cpu_time", "memory", "output", "forbidden"]

VIOLATION_EXIT = 86  # must match _sandbox_boot.VIOLATION_EXIT
VIOLATION_MARKER = "SandboxViolation:"
NOBODY_UID = 65534
_BOOT_SOURCE = (Path(__file__).with_name("_sandbox_boot.py")).read_text(encoding="utf-8")
_READ_CHUNK = 65536


@dataclass(frozen=True)
class SandboxResult:
    """What happened to one program.

    stdout/stderr: decoded UTF-8 (invalid bytes replaced), cut at the output limit.
    exit_code:     the process exit status; negative = killed by that signal (e.g. -9).
    limit:         which limit stopped the program, or None if it ended by itself.
    duration:      wall-clock seconds from start to exit.
    """

    stdout: str
    stderr: str
    exit_code: int
    limit: Limit | None
    duration: float

    @property
    def ok(self) -> bool:
        """Exited with status 0 and hit no limit."""
        return self.exit_code == 0 and self.limit is None


@dataclass(frozen=True)
class SandboxJob:
    """The arguments of one `run_python` call (for `SandboxPool.map`)."""

    code: str
    """The program, run as `__main__` from main.py in the working directory."""
    stdin: str = ""
    """Text fed to the program's standard input."""
    wall_time: float = 10.0
    """Seconds of real time before the process is killed."""
    cpu_time: float | None = None
    """Seconds of CPU time (RLIMIT_CPU, rounded up to whole seconds); None = same as wall_time."""
    memory_mb: int = 512
    """Address-space limit in MiB (RLIMIT_AS)."""
    max_output_bytes: int = 1_000_000
    """Bytes kept from each of stdout and stderr; more stops the program ("output")."""
    max_file_bytes: int = 16_000_000
    """Largest file the program may write in its working directory (RLIMIT_FSIZE)."""
    files: dict[str, str] | None = field(default=None, hash=False)
    """Extra files (relative name -> text) put in the working directory before the run."""


@dataclass(frozen=True)
class Isolation:
    """Which operating-system layers this machine gives the sandbox (the audit hook is always on)."""

    separate_user: bool
    """The child runs as uid 65534 (`nobody`): needs root and `setpriv`."""
    no_network: bool
    """The child runs in an empty network namespace: needs root and `unshare`."""


@functools.lru_cache(maxsize=1)
def isolation() -> Isolation:
    """Detect once which OS layers work here (root + setpriv/unshare, as in most containers)."""
    if os.name != "posix" or os.geteuid() != 0:
        return Isolation(separate_user=False, no_network=False)
    no_network = _works(["unshare", "-n", "true"])
    separate_user = _works(_setpriv_prefix() + [sys.executable, "-I", "-S", "-c", "import json"])
    return Isolation(separate_user=separate_user, no_network=no_network)


def _works(cmd: list[str]) -> bool:
    if shutil.which(cmd[0]) is None:
        return False
    try:
        return subprocess.run(cmd, capture_output=True, timeout=10, cwd="/").returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _setpriv_prefix() -> list[str]:
    # CAP_DAC_READ_SEARCH (read-only) is kept so the interpreter and standard library stay
    # readable when they live under a private home (e.g. pyenv in /root); writing, deleting,
    # signalling and raising limits all need powers `nobody` does not have.
    return ["setpriv", f"--reuid={NOBODY_UID}", f"--regid={NOBODY_UID}", "--clear-groups",
            "--inh-caps=-all,+dac_read_search", "--ambient-caps=-all,+dac_read_search",
            "--bounding-set=-all,+dac_read_search", "--no-new-privs"]


def _command(config: dict) -> list[str]:
    layers = isolation()
    prefix: list[str] = []
    if layers.no_network:
        prefix += ["unshare", "-n", "--"]
    if layers.separate_user:
        prefix += _setpriv_prefix()
    # -I: ignore PYTHON* variables and user site; -S: no site-packages; -B: write no .pyc files.
    return prefix + [sys.executable, "-I", "-S", "-B", "-c", _BOOT_SOURCE, json.dumps(config)]


def _prepare_workdir(code: str, stdin: str, files: dict[str, str] | None) -> Path:
    workdir = Path(tempfile.mkdtemp(prefix="resd-sandbox-")).resolve()
    for name, text in (files or {}).items():
        target = (workdir / name).resolve()
        if workdir not in target.parents:
            shutil.rmtree(workdir, ignore_errors=True)
            raise ValueError(f"sandbox file name {name!r} must be a relative path inside the working directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    (workdir / "main.py").write_text(code, encoding="utf-8")
    (workdir / ".stdin").write_text(stdin, encoding="utf-8")
    if isolation().separate_user:
        for path in [workdir, *workdir.rglob("*")]:
            os.chown(path, NOBODY_UID, NOBODY_UID)
    return workdir


def run_python(
    code: str,
    *,
    stdin: str = "",
    wall_time: float = 10.0,
    cpu_time: float | None = None,
    memory_mb: int = 512,
    max_output_bytes: int = 1_000_000,
    max_file_bytes: int = 16_000_000,
    files: dict[str, str] | None = None,
) -> SandboxResult:
    """Run `code` as a Python program in a fresh limited process and report what happened.

    Never raises for anything the program does; raises ValueError only for bad arguments.
    See the module docstring for the rules and `SandboxJob` for each argument.
    """
    if wall_time <= 0 or memory_mb <= 0 or max_output_bytes <= 0:
        raise ValueError("wall_time, memory_mb and max_output_bytes must be positive")
    cpu_seconds = max(1, int(-(-(cpu_time if cpu_time is not None else wall_time) // 1)))
    workdir = _prepare_workdir(code, stdin, files)
    config = {
        "workdir": str(workdir),
        "cpu_seconds": cpu_seconds,
        "memory_bytes": int(memory_mb) * 1024 * 1024,
        "file_bytes": int(max_file_bytes),
    }
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(workdir), "TMPDIR": str(workdir)}
    try:
        with open(workdir / ".stdin", "rb") as stdin_file:
            return _supervise(_command(config), workdir, env, stdin_file, wall_time, max_output_bytes)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _supervise(cmd, workdir, env, stdin_file, wall_time, max_output_bytes) -> SandboxResult:
    """Start the child, collect bounded output, enforce the wall clock, classify the ending."""
    start = time.monotonic()
    deadline = start + wall_time
    proc = subprocess.Popen(cmd, stdin=stdin_file, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=workdir, env=env, start_new_session=True, close_fds=True)
    buffers = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    limit: Limit | None = None
    with selectors.DefaultSelector() as selector:
        for stream in buffers:
            selector.register(stream, selectors.EVENT_READ)
        while selector.get_map() and limit is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                limit = "wall_time"
                break
            for key, _ in selector.select(remaining):
                chunk = os.read(key.fd, _READ_CHUNK)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                buffer = buffers[key.fileobj]
                buffer += chunk
                if len(buffer) > max_output_bytes:
                    del buffer[max_output_bytes:]
                    limit = "output"
                    break
    if limit is not None:
        _kill_group(proc)
    try:
        proc.wait(timeout=max(0.05, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:  # output closed but the process lingers
        limit = "wall_time"
        _kill_group(proc)
        proc.wait()
    _kill_group(proc)  # nothing of the program may outlive the call
    for stream in buffers:
        stream.close()
    duration = time.monotonic() - start
    stdout = buffers[proc.stdout].decode("utf-8", "replace")
    stderr = buffers[proc.stderr].decode("utf-8", "replace")
    exit_code = proc.returncode
    if limit is None:
        limit = _classify(exit_code, stderr)
    return SandboxResult(stdout=stdout, stderr=stderr, exit_code=exit_code, limit=limit, duration=duration)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _classify(exit_code: int, stderr: str) -> Limit | None:
    """Name the limit behind an ending the host did not cause itself."""
    if exit_code == VIOLATION_EXIT and VIOLATION_MARKER in stderr:
        return "forbidden"
    if exit_code in (-signal.SIGXCPU, -signal.SIGKILL):
        # Only the kernel's hard CPU limit sends SIGKILL here: the host's own kills are
        # classified before this function is reached.
        return "cpu_time"
    last_line = stderr.strip().rsplit("\n", 1)[-1] if stderr.strip() else ""
    # Python ignores SIGXFSZ, so RLIMIT_FSIZE shows up as EFBIG ("File too large").
    if exit_code == -signal.SIGXFSZ or (exit_code != 0 and "[Errno 27]" in last_line):
        return "output"
    if exit_code != 0 and last_line.startswith("MemoryError"):
        return "memory"
    return None


class SandboxPool:
    """Run many sandboxed programs in parallel (threads, each supervising one child process).

        with SandboxPool(workers=8) as pool:
            results = pool.map(jobs)  # same order as jobs
    """

    def __init__(self, workers: int | None = None):
        self.workers = max(1, workers or os.cpu_count() or 1)
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="resd-sandbox")

    def map(self, jobs: Iterable[SandboxJob]) -> list[SandboxResult]:
        """Run every job; results come back in the jobs' order."""
        return list(self._executor.map(_run_job, jobs))

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def __enter__(self) -> "SandboxPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _run_job(job: SandboxJob) -> SandboxResult:
    return run_python(job.code, stdin=job.stdin, wall_time=job.wall_time, cpu_time=job.cpu_time,
                      memory_mb=job.memory_mb, max_output_bytes=job.max_output_bytes,
                      max_file_bytes=job.max_file_bytes, files=job.files)


def run_many(jobs: Iterable[SandboxJob], workers: int | None = None) -> list[SandboxResult]:
    """One-shot `SandboxPool(workers).map(jobs)`."""
    with SandboxPool(workers) as pool:
        return pool.map(jobs)
