"""Run untrusted Python (model-written programs) isolated by the operating system.

    >>> from resd.envs.sandbox import run_python, SandboxPool, SandboxJob
    >>> r = run_python("print(input()[::-1])", stdin="abc\\n", wall_time=5)
    >>> r.stdout, r.exit_code, r.limit
    ('cba\\n', 0, None)
    >>> with SandboxPool(workers=4) as pool:
    ...     results = pool.map([SandboxJob(code=f"print({i}*{i})") for i in range(8)])

A policy under RL pressure searches for whatever raises its reward: exiting early, reading the
hidden tests, faking the judge's output, attacking the host. So the boundary is the kernel's, set
up by an existing, audited tool, and the in-interpreter audit hook is only a second layer (PEP 578
says plainly that audit hooks are not a security boundary).

Mode "bwrap" (the default; bubblewrap, what Flatpak uses):
- new user, PID, mount, IPC, UTS, network and cgroup namespaces; no capabilities, no new
  privileges, no further user namespaces. As root, bwrap itself runs as the user `nobody`
  (setpriv), so the program is root nowhere and the kernel's per-user limits apply to it;
- a filesystem holding only the system's shared libraries and one Python interpreter with its
  standard library (its site-packages hidden), read-only, plus a fresh tmpfs working directory
  of at most `max_disk_bytes` (also HOME and TMPDIR). No project files, no hidden tests, no judge
  code, no /tmp, no /etc, /dev read-only, /proc of its own PID namespace only;
- the program is the sandbox's pid 1 (`--as-pid-1`): there is no init of bubblewrap's inside, a
  process of the program's own user but without its filter and limits that the program could
  rewrite through /proc/1/mem. Every process of the sandbox is the program (and its threads);
- a seccomp filter (libseccomp on the host, installed before the program runs): no new programs
  (execve), no new processes (fork; threads work), none of the kernel's large attack surfaces
  (ptrace, mount, namespaces, bpf, perf, keyctl, io_uring, userfaultfd, kexec, modules, ...), no
  memory that RLIMIT_AS does not count (memfd, System V shared memory and message queues, POSIX
  message queues, pipe buffers grown past 64 KiB), and the death signal stays (the program dies
  with bubblewrap, which the host kills);
- limits: CPU seconds, address space, file size, open files, threads, the wall clock (host).
  Memory is bounded by memory_mb plus the tmpfs (max_disk_bytes) plus default pipe and socket
  buffers of at most 64 descriptors.
The interpreter is the host's base Python when the sandbox user can read it, else the system's
/usr/bin/python3 (`RESD_SANDBOX_PYTHON` names another world-readable one).

Mode "unsafe-local": no operating-system isolation, only limits and the audit hook (plus a
separate user with no capabilities at all and no network when run as root). For machines
without bubblewrap (macOS, a container without user namespaces), on the user's explicit request
only: `sandbox: unsafe-local` in the environment's options or RESD_SANDBOX=unsafe-local; it is
announced on stderr once. A resumed run takes it from the user, never from its run directory.

`limit` in a result says what stopped a program: "wall_time", "cpu_time", "memory", "output"
(output or file size) or "forbidden" (the audit hook caught an attempt; with bwrap, attempts it
misses fail against the kernel instead). Not a defence against kernel exploits.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal

from resd.errors import UserError

Limit = Literal["wall_time", "cpu_time", "memory", "output", "forbidden"]
MODES = ("bwrap", "unsafe-local")

VIOLATION_EXIT = 86  # must match _sandbox_boot.VIOLATION_EXIT
VIOLATION_MARKER = "SandboxViolation:"
NOBODY_UID = 65534
_BOOT_SOURCE = (Path(__file__).with_name("_sandbox_boot.py")).read_text(encoding="utf-8")
_READ_CHUNK = 65536
_WORK = "/work"  # the working directory inside a bwrap sandbox


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
    max_disk_bytes: int = 64_000_000
    """All files of the working directory together (the size of its tmpfs; bwrap mode)."""
    threads: int = 16
    """Threads the program may run besides its main one (bwrap mode; new processes never)."""
    files: dict[str, str] | None = field(default=None, hash=False)
    """Extra files (relative name -> text) put in the working directory before the run."""
    mode: str | None = None
    """"bwrap" or "unsafe-local"; None = `default_mode()`."""


# ----------------------------------------------------------------------------------------------
# Which isolation this machine has
# ----------------------------------------------------------------------------------------------

def default_mode() -> str:
    """RESD_SANDBOX if set, else "bwrap"."""
    return os.environ.get("RESD_SANDBOX", "bwrap") or "bwrap"


def _works(cmd: list[str], **kwargs) -> bool:
    if shutil.which(cmd[0]) is None:
        return False
    try:
        return subprocess.run(cmd, capture_output=True, timeout=20, cwd="/", **kwargs).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _world_readable(path: Path) -> bool:
    """Whether a user with no special rights can reach `path` (every folder on the way searchable
    by others, the file itself readable by others)."""
    try:
        target = path.resolve()
        for folder in target.parents:
            if not folder.stat().st_mode & 0o001:
                return False
        return bool(target.stat().st_mode & 0o004)
    except OSError:
        return False


@dataclass(frozen=True)
class Interpreter:
    """The Python the sandbox runs and what to mount for it."""

    executable: str
    """Its path (the same inside the sandbox)."""
    mounts: tuple[str, ...]
    """Folders or files mounted read-only at the same place."""
    hidden: tuple[str, ...]
    """Folders under those mounts replaced by an empty read-only tmpfs (site-packages)."""


def _host_interpreter() -> Interpreter:
    prefix = Path(sys.base_prefix).resolve()
    executable = Path(getattr(sys, "_base_executable", "") or sys.executable).resolve()
    stdlib = Path(sysconfig.get_paths(vars={"base": str(prefix), "platbase": str(prefix)})["stdlib"])
    site = stdlib / "site-packages"
    mounts = [str(prefix)] if executable.is_relative_to(prefix) else [str(prefix), str(executable.parent)]
    return Interpreter(str(executable), tuple(mounts), (str(site),) if site.is_dir() else ())


def _system_interpreter(path: str = "/usr/bin/python3") -> Interpreter | None:
    exe = Path(path)
    if not exe.exists():
        return None
    resolved = exe.resolve()
    # A system Python lives under /usr, whose libraries are mounted anyway; its dist-packages
    # (Debian's) and site-packages are hidden.
    hidden = tuple(str(p) for p in Path("/usr/lib").glob("python3*/*-packages") if p.is_dir())
    hidden += tuple(str(p) for p in Path("/usr/local/lib").glob("python3*/*-packages") if p.is_dir())
    return Interpreter(str(resolved), (str(resolved),), hidden)


@functools.lru_cache(maxsize=1)
def _as_nobody() -> bool:
    """As root, bwrap runs as `nobody` (then the program is not root outside its namespace and
    RLIMIT_NPROC counts its threads); otherwise as the current user."""
    return os.name == "posix" and os.geteuid() == 0


@functools.lru_cache(maxsize=1)
def sandbox_interpreter() -> Interpreter | None:
    """The interpreter the bwrap sandbox runs (see the module docstring), or None."""
    named = os.environ.get("RESD_SANDBOX_PYTHON")
    if named:
        return _system_interpreter(named)
    host = _host_interpreter()
    if not _as_nobody() or _world_readable(Path(host.executable)):
        return host
    return _system_interpreter()


@dataclass(frozen=True)
class Isolation:
    """Which layers a sandbox mode gives on this machine."""

    mode: str
    os_isolation: bool
    """Namespaces, private filesystem and seccomp (bwrap mode)."""
    separate_user: bool
    """The program runs as a user with no rights on the host's files."""
    no_network: bool
    """The program has no network."""
    reason: str = ""
    """Why the mode is unavailable ("" when it works)."""

    @property
    def available(self) -> bool:
        return not self.reason


def isolation(mode: str | None = None) -> Isolation:
    """What `mode` (default: `default_mode()`, read at each call) gives here, detected once per
    mode (a trial run)."""
    return _isolation(mode or default_mode())


@functools.lru_cache(maxsize=4)
def _isolation(mode: str) -> Isolation:
    if mode not in MODES:
        return Isolation(mode, False, False, False, f"unknown sandbox mode {mode!r}; use bwrap or unsafe-local")
    if mode == "unsafe-local":
        root = os.name == "posix" and os.geteuid() == 0
        no_network = root and _works(["unshare", "-n", "true"])
        interpreter = sandbox_interpreter() if root else None
        separate_user = interpreter is not None and _works(
            _setpriv_prefix() + [interpreter.executable, "-I", "-S", "-c", "1"])
        return Isolation(mode, False, separate_user, no_network)
    if sys.platform != "linux":
        return Isolation(mode, False, False, False, "bubblewrap needs Linux")
    if shutil.which("bwrap") is None:
        return Isolation(mode, False, False, False, "bubblewrap (bwrap) is not installed")
    interpreter = sandbox_interpreter()
    if interpreter is None:
        return Isolation(mode, False, False, False, "no Python interpreter that the sandbox user can read "
                                                    "(set RESD_SANDBOX_PYTHON to a world-readable python3)")
    try:
        _seccomp_program()
    except Exception as exc:  # noqa: BLE001 - any failure here means no filter, so no sandbox
        return Isolation(mode, False, False, False, f"cannot build the seccomp filter ({exc}); "
                                                    "install libseccomp (Debian: libseccomp2)")
    trial = _run(SandboxJob(code="print(6 * 7)", wall_time=20, mode="bwrap"))
    if not (trial.ok and trial.stdout.strip() == "42"):
        detail = (trial.stderr.strip().splitlines() or [f"exit {trial.exit_code}"])[-1][:200]
        return Isolation(mode, False, False, False, f"bubblewrap cannot start a sandbox here ({detail}); "
                                                    "user namespaces may be disabled")
    return Isolation(mode, True, True, True)


isolation.cache_clear = _isolation.cache_clear  # type: ignore[attr-defined]  # forget what was detected


def require(mode: str | None = None) -> Isolation:
    """The isolation of `mode`, or a UserError naming the fix when it is not available here."""
    layers = isolation(mode)
    if not layers.available:
        raise UserError(f"untrusted code needs an OS sandbox, and {layers.reason}: install bubblewrap "
                        f"(Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap), or "
                        f"accept running model-written code unisolated with the environment option "
                        f"sandbox=unsafe-local (or RESD_SANDBOX=unsafe-local)")
    if layers.mode == "unsafe-local":
        _announce_unsafe()
    return layers


@functools.lru_cache(maxsize=1)
def _announce_unsafe() -> None:
    print("resd: warning: sandbox=unsafe-local: model-written programs run WITHOUT operating-system "
          "isolation (audit hook and limits only)", file=sys.stderr)


# ----------------------------------------------------------------------------------------------
# The seccomp filter
# ----------------------------------------------------------------------------------------------

DENIED_SYSCALLS: tuple[str, ...] = (
    "execve", "execveat", "fork", "vfork",  # no new programs, no new processes
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "mount_setattr", "move_mount",
    "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "open_by_handle_at", "name_to_handle_at",
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "kexec_load", "kexec_file_load", "reboot", "init_module", "finit_module", "delete_module",
    "swapon", "swapoff", "acct", "quotactl", "syslog", "vhangup", "fanotify_init", "iopl", "ioperm",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "personality", "uselib", "ustat",
    "sysfs", "lookup_dcookie", "nfsservctl", "process_madvise",
    # Memory outside the address space that RLIMIT_AS counts: shmem that stays allocated while no
    # mapping holds it (memfd files, System V shared memory, message queues).
    "memfd_create", "memfd_secret", "shmget", "shmat", "shmctl", "shmdt", "msgget", "msgsnd", "msgrcv",
    "msgctl", "semget", "semop", "semtimedop", "semctl", "mq_open", "mq_unlink", "mq_timedsend",
    "mq_timedreceive", "mq_notify", "mq_getsetattr",
)
CLONE_THREAD = 0x00010000
PR_SET_PDEATHSIG = 1
F_SETPIPE_SZ = 1031


@functools.lru_cache(maxsize=1)
def _seccomp_program() -> bytes:
    """The BPF program (libseccomp): deny the calls above with EPERM, clone without CLONE_THREAD
    (a new process) with EPERM, and clone3 with ENOSYS so that the C library falls back to clone
    for threads; also deny clearing the death signal (the program is the sandbox's pid 1: with
    its death signal it dies with bubblewrap, which the host kills) and growing pipe buffers (a
    pipe keeps its default 64 KiB of kernel memory); everything else is allowed."""
    import pyseccomp as seccomp

    rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for name in DENIED_SYSCALLS:
        try:
            rules.add_rule(seccomp.ERRNO(errno.EPERM), name)
        except (ValueError, RuntimeError, OSError):
            pass  # not a system call on this architecture
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    rules.add_rule(seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD, 0))
    rules.add_rule(seccomp.ERRNO(errno.EPERM), "prctl", seccomp.Arg(0, seccomp.EQ, PR_SET_PDEATHSIG))
    rules.add_rule(seccomp.ERRNO(errno.EPERM), "fcntl", seccomp.Arg(1, seccomp.EQ, F_SETPIPE_SZ))
    with tempfile.TemporaryFile() as f:
        rules.export_bpf(f)
        f.seek(0)
        return f.read()


# ----------------------------------------------------------------------------------------------
# Running one program
# ----------------------------------------------------------------------------------------------

def run_python(
    code: str,
    *,
    stdin: str = "",
    wall_time: float = 10.0,
    cpu_time: float | None = None,
    memory_mb: int = 512,
    max_output_bytes: int = 1_000_000,
    max_file_bytes: int = 16_000_000,
    max_disk_bytes: int = 64_000_000,
    threads: int = 16,
    files: dict[str, str] | None = None,
    mode: str | None = None,
) -> SandboxResult:
    """Run `code` as a Python program in a fresh isolated process and report what happened.

    Never raises for anything the program does; raises ValueError for bad arguments and
    UserError when the requested isolation is not available on this machine (see `require`).
    See the module docstring for the rules and `SandboxJob` for each argument.
    """
    job = SandboxJob(code=code, stdin=stdin, wall_time=wall_time, cpu_time=cpu_time, memory_mb=memory_mb,
                     max_output_bytes=max_output_bytes, max_file_bytes=max_file_bytes,
                     max_disk_bytes=max_disk_bytes, threads=threads, files=files, mode=mode)
    require(job.mode)
    return _run(job)


def _check(job: SandboxJob) -> None:
    if job.wall_time <= 0 or job.memory_mb <= 0 or job.max_output_bytes <= 0 or job.max_disk_bytes <= 0:
        raise ValueError("wall_time, memory_mb, max_output_bytes and max_disk_bytes must be positive")
    if job.threads < 0:
        raise ValueError("threads must be >= 0")
    for name in job.files or {}:
        parts = Path(name).parts
        if not parts or Path(name).is_absolute() or ".." in parts or name == "main.py":
            raise ValueError(f"sandbox file name {name!r} must be a relative path inside the working directory")


def _run(job: SandboxJob) -> SandboxResult:
    _check(job)
    mode = job.mode or default_mode()
    cpu_seconds = max(1, int(-(-(job.cpu_time if job.cpu_time is not None else job.wall_time) // 1)))
    if mode == "bwrap":
        return _run_bwrap(job, cpu_seconds)
    return _run_local(job, cpu_seconds)


_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


def _memfd(name: str, data: bytes) -> int:
    """An anonymous in-memory file holding `data`, positioned at its start (for bwrap's --file and
    as stdin: no pipe to keep fed, no file on the host's disk). Sealed against writing, growing
    and shrinking: the program holds it as stdin, and host memory it could fill would count
    against no limit of the program."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _run_bwrap(job: SandboxJob, cpu_seconds: int) -> SandboxResult:
    interpreter = sandbox_interpreter()
    assert interpreter is not None  # require() checked it
    fds: list[int] = []

    def memfd(name: str, text: str | bytes) -> int:
        fd = _memfd(name, text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text)
        fds.append(fd)
        return fd

    try:
        seccomp_fd = memfd("seccomp", _seccomp_program())
        # The program is the sandbox's pid 1 (--as-pid-1): no bubblewrap init beside it, so every
        # process of the sandbox is under the filter and the limits installed by the boot script
        # (an init of bwrap's own is unfiltered and dumpable by the program's user: it could be
        # rewritten through /proc/1/mem). The kernel ignores SIGXCPU for a namespace's init, so
        # the CPU limit ends it with the hard limit's SIGKILL (soft = hard).
        # processes: RLIMIT_NPROC counts the program's threads, its main one included.
        config = {"workdir": _WORK, "cpu_seconds": cpu_seconds, "cpu_grace_seconds": 0,
                  "memory_bytes": int(job.memory_mb) << 20, "file_bytes": int(job.max_file_bytes),
                  "processes": int(job.threads) + 1, "seccomp_fd": seccomp_fd}
        cmd = (_setpriv_prefix() if _as_nobody() else []) + [
            "bwrap", "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
            "--as-pid-1", "--cap-drop", "ALL", "--hostname", "sandbox",
            "--ro-bind", "/usr/lib", "/usr/lib", "--ro-bind-try", "/usr/lib64", "/usr/lib64",
            "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
        ]
        for folder in interpreter.mounts:
            if not folder.startswith("/usr/lib"):
                cmd += ["--ro-bind", folder, folder]
        for folder in interpreter.hidden:
            cmd += ["--tmpfs", folder, "--remount-ro", folder]
        cmd += ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev",
                "--size", str(int(job.max_disk_bytes)), "--tmpfs", _WORK]
        for name, text in sorted({**(job.files or {}), "main.py": job.code}.items()):
            for parent in reversed(Path(name).parents[:-1]):
                cmd += ["--dir", f"{_WORK}/{parent.as_posix()}"]
            cmd += ["--file", str(memfd(name, text)), f"{_WORK}/{name}"]
        cmd += ["--remount-ro", "/", "--chdir", _WORK, "--", interpreter.executable, "-I", "-S", "-B",
                "-c", _BOOT_SOURCE, json.dumps(config)]
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": _WORK, "TMPDIR": _WORK}
        passed = tuple(fds)  # bwrap's --file sources and the filter; stdin travels as fd 0 only
        stdin_fd = memfd("stdin", job.stdin)
        result = _supervise(cmd, "/", env, stdin_fd, job.wall_time, job.max_output_bytes, pass_fds=passed)
    finally:
        for fd in fds:
            os.close(fd)
    if result.exit_code > 128 and result.limit is None:
        # bwrap reports a child killed by signal N as exit status 128 + N.
        code = -(result.exit_code - 128)
        result = SandboxResult(result.stdout, result.stderr, code, _classify(code, result.stderr), result.duration)
    return result


def _setpriv_prefix() -> list[str]:
    """Become `nobody` with no capabilities at all (none inherited, ambient or in the bounding
    set) and no way to gain any (no new privileges): a file the host keeps from other users stays
    unreadable. The interpreter it runs must therefore be world-readable (`sandbox_interpreter`)."""
    return ["setpriv", f"--reuid={NOBODY_UID}", f"--regid={NOBODY_UID}", "--clear-groups",
            "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--no-new-privs"]


def _run_local(job: SandboxJob, cpu_seconds: int) -> SandboxResult:
    """unsafe-local: a temporary folder on the host, limits and the audit hook only."""
    layers = isolation("unsafe-local")
    workdir = Path(tempfile.mkdtemp(prefix="resd-sandbox-")).resolve()
    try:
        for name, text in {**(job.files or {}), "main.py": job.code}.items():
            target = workdir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(text.encode("utf-8", "surrogateescape"))
        if layers.separate_user:
            for path in [workdir, *workdir.rglob("*")]:
                os.chown(path, NOBODY_UID, NOBODY_UID)
        config = {"workdir": str(workdir), "cpu_seconds": cpu_seconds, "cpu_grace_seconds": 1,
                  "memory_bytes": int(job.memory_mb) << 20,
                  "file_bytes": int(job.max_file_bytes), "processes": None, "seccomp_fd": None}
        prefix = (["unshare", "-n", "--"] if layers.no_network else []) + (
            _setpriv_prefix() if layers.separate_user else [])
        # The separate user runs the world-readable interpreter the bwrap sandbox would run.
        interpreter = sandbox_interpreter() if layers.separate_user else None
        executable = interpreter.executable if interpreter is not None else sys.executable
        cmd = prefix + [executable, "-I", "-S", "-B", "-c", _BOOT_SOURCE, json.dumps(config)]
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(workdir), "TMPDIR": str(workdir)}
        stdin_fd = _memfd("stdin", job.stdin.encode("utf-8", "surrogateescape"))
        try:
            return _supervise(cmd, str(workdir), env, stdin_fd, job.wall_time, job.max_output_bytes)
        finally:
            os.close(stdin_fd)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _supervise(cmd, cwd, env, stdin_fd, wall_time, max_output_bytes, pass_fds=()) -> SandboxResult:
    """Start the child, collect bounded output, enforce the wall clock, classify the ending."""
    start = time.monotonic()
    deadline = start + wall_time
    proc = subprocess.Popen(cmd, stdin=stdin_fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=cwd, env=env, start_new_session=True, close_fds=True, pass_fds=pass_fds)
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
    # Python ignores SIGXFSZ, so RLIMIT_FSIZE shows up as EFBIG ("File too large"); a full
    # working directory (the tmpfs) as ENOSPC.
    if exit_code == -signal.SIGXFSZ or (exit_code != 0 and ("[Errno 27]" in last_line or "[Errno 28]" in last_line)):
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
        jobs = list(jobs)
        for mode in {job.mode for job in jobs}:
            require(mode)
        return list(self._executor.map(_run, jobs))

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def __enter__(self) -> "SandboxPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_many(jobs: Iterable[SandboxJob], workers: int | None = None) -> list[SandboxResult]:
    """One-shot `SandboxPool(workers).map(jobs)`."""
    with SandboxPool(workers) as pool:
        return pool.map(jobs)
