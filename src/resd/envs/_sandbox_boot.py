"""In-process guard that runs inside every sandboxed child before the untrusted program.

The host (`resd.envs.sandbox`) passes this file's text to `python -I -S -B -c` with one JSON
argument, so this is a standalone script: it must import nothing from resd and nothing outside
the standard library. It

1. lowers resource limits (CPU seconds, address space, file size, open files, processes and
   threads when the host asks, core dumps); an unprivileged child cannot raise them again,
2. installs the host's seccomp filter (bwrap mode; the BPF program arrives on a file descriptor):
   from here on the kernel refuses new programs and new processes (threads still work),
3. installs an audit hook (PEP 578) that kills the process with exit status VIOLATION_EXIT as
   soon as the program tries to start a process, open a socket, load native code, change limits,
   write outside its working directory or read outside the standard library and its working
   directory. It is a second layer only: the operating system is the boundary (bwrap mode);
4. runs `main.py` from the working directory as `__main__` and prints tracebacks without the
   frames of this script.
"""

import json
import os
import resource
import sys

VIOLATION_EXIT = 86
VIOLATION_MARKER = "SandboxViolation:"

config = json.loads(sys.argv[1])
WORKDIR = config["workdir"].rstrip("/")

# 1. Resource limits (soft, hard). The host says how much later the hard CPU limit (SIGKILL) comes
#    than the soft one (SIGXCPU, which the kernel does not deliver to a PID namespace's init).
_cpu = int(config["cpu_seconds"])
_limits = [
    (resource.RLIMIT_CPU, (_cpu, _cpu + int(config["cpu_grace_seconds"]))),
    (resource.RLIMIT_AS, (config["memory_bytes"], config["memory_bytes"])),
    (resource.RLIMIT_FSIZE, (config["file_bytes"], config["file_bytes"])),
    (resource.RLIMIT_NOFILE, (64, 64)),
    (resource.RLIMIT_CORE, (0, 0)),
]
if config.get("processes") is not None:
    # Processes and threads of this user in this user namespace (bwrap mode: this sandbox).
    _limits.append((resource.RLIMIT_NPROC, (int(config["processes"]), int(config["processes"]))))
for _which, _value in _limits:
    try:
        resource.setrlimit(_which, _value)
    except (ValueError, OSError):  # a limit already lower than ours stays as it is
        pass

import traceback  # noqa: E402  (imported before the hook so error reporting always works)


def _install_seccomp(fd):
    """Load the host's BPF program (PR_SET_NO_NEW_PRIVS, then PR_SET_SECCOMP with a filter)."""
    import ctypes

    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    program = b"".join(chunks)

    class _Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buffer = ctypes.create_string_buffer(program, len(program))
    prog = _Prog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:
        os.write(2, b"sandbox: could not install the seccomp filter\n")
        os._exit(70)
    for name in [m for m in sys.modules if m == "ctypes" or m.startswith(("ctypes.", "_ctypes"))]:
        del sys.modules[name]


if config.get("seccomp_fd") is not None:
    _install_seccomp(int(config["seccomp_fd"]))

# 2. The audit hook. Everything it uses is bound now, as default arguments, so that a program
#    which replaces module attributes (os.getcwd = ..., builtins.len = ...) cannot change it.
_READ_ROOTS = tuple(p.rstrip("/") for p in sys.path if p) + (
    WORKDIR, "/dev/null", "/dev/urandom", "/dev/zero", "/usr/share/zoneinfo", "/etc/localtime",
)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC

_ALWAYS_FORBIDDEN = frozenset({
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
    "os.kill", "os.killpg", "os.symlink", "os.link", "os.chroot", "os.mknod", "os.setxattr",
    "os.removexattr", "subprocess.Popen", "pty.spawn",
    "resource.setrlimit", "resource.prlimit",
    "ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle", "ctypes.cdata", "ctypes.call_function",
    "socket.__new__", "socket.bind", "socket.connect", "socket.getaddrinfo",
    "socket.gethostbyname", "socket.gethostbyaddr", "socket.sendto", "socket.sendmsg",
    "socket.sethostname",
    # Reaching the hook's own objects through the garbage collector.
    "gc.get_objects", "gc.get_referrers", "gc.get_referents",
})
# Modules whose only use here would be to start processes or call native code directly.
_FORBIDDEN_IMPORTS = frozenset({"_posixsubprocess", "_ctypes", "ctypes"})
_WRITE_EVENTS = frozenset({
    "os.remove", "os.rmdir", "os.mkdir", "os.rename", "os.chmod", "os.lchmod", "os.chown",
    "os.lchown", "os.truncate", "os.utime", "os.chflags", "os.lchflags", "os.mkfifo",
    "shutil.rmtree", "shutil.copytree", "shutil.move", "shutil.chown",
})
_READ_EVENTS = frozenset({"os.listdir", "os.scandir", "os.chdir"})


def _normalise(path, _getcwd=os.getcwd, _fsdecode=os.fsdecode, _fspath=os.fspath,
               _str=str, _isinstance=isinstance, _int=int):
    """Absolute, lexically normalised path; None for a file descriptor."""
    if _isinstance(path, _int):
        return None
    path = _fspath(path)
    if not _isinstance(path, _str):
        path = _fsdecode(path)
    if not path.startswith("/"):
        path = _getcwd() + "/" + path
    parts = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


def _under(path, roots):
    for root in roots:
        if path == root or path.startswith(root + "/"):
            return True
    return False


def _deny(what, _write=os.write, _exit=os._exit, _sys=sys):
    try:
        _sys.stdout.flush()
    except BaseException:
        pass
    message = "\n%s %s is not allowed in the sandbox\n" % (VIOLATION_MARKER, what)
    try:
        _write(2, message.encode("utf-8", "replace"))
    finally:
        _exit(VIOLATION_EXIT)


def _hook(event, args, _norm=_normalise, _under=_under, _deny=_deny, _str=str,
          _isinstance=isinstance, _bytes=bytes, _write_roots=(WORKDIR,), _read_roots=_READ_ROOTS,
          _always=_ALWAYS_FORBIDDEN, _imports=_FORBIDDEN_IMPORTS, _writes=_WRITE_EVENTS,
          _reads=_READ_EVENTS, _write_flags=_WRITE_FLAGS, _repr=repr, _len=len, _any=any,
          _int=int, _hasattr=hasattr):
    if event in _always:
        _deny(event)
    elif event == "import":
        if args[0] in _imports:
            _deny("import %s (starting processes or loading native code)" % args[0])
    elif event == "open":
        path = _norm(args[0])
        if path is None:
            return
        mode = args[1]
        flags = args[2] if _len(args) > 2 else 0
        writing = (_isinstance(mode, _str) and _any(c in mode for c in "wax+")) or (
            _isinstance(flags, _int) and flags & _write_flags)
        if writing and not _under(path, _write_roots):
            _deny("writing %s (only the working directory is writable)" % _repr(path))
        if not writing and not _under(path, _read_roots):
            _deny("reading %s (only the working directory and the standard library are readable)"
                  % _repr(path))
    elif event in _writes:
        for arg in args:
            if _isinstance(arg, (_str, _bytes)) or _hasattr(arg, "__fspath__"):
                path = _norm(arg)
                if not _under(path, _write_roots):
                    _deny("%s on %s (only the working directory may change)" % (event, _repr(path)))
    elif event in _reads:
        if args and args[0] is not None:
            path = _norm(args[0])
            roots = _write_roots if event == "os.chdir" else _read_roots
            if path is not None and not _under(path, roots):
                _deny("%s on %s" % (event, _repr(path)))
    elif event == "shutil.copyfile":
        src, dst = _norm(args[0]), _norm(args[1])
        if src is not None and not _under(src, _read_roots):
            _deny("reading %s" % _repr(src))
        if dst is not None and not _under(dst, _write_roots):
            _deny("writing %s (only the working directory is writable)" % _repr(dst))


def _run_main():
    path = WORKDIR + "/main.py"
    with open(path, encoding="utf-8") as f:
        source = f.read()
    code = compile(source, "main.py", "exec")
    namespace = {"__name__": "__main__", "__file__": path, "__builtins__": __builtins__}
    sys.argv = ["main.py"]
    exec(code, namespace)


def _print_guest_traceback(exc):
    """Print the traceback from the program's first frame on (this script's frames are noise)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != "main.py":
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb if tb is not None else exc.__traceback__)


sys.addaudithook(_hook)
sys.path[:] = [WORKDIR] + [p for p in sys.path if p]  # the program may import its own files
del config, _limits
try:
    _run_main()
except SystemExit:
    raise
except MemoryError:
    # Reporting may itself run out of memory: say the one thing the host looks for.
    try:
        sys.stderr.write("MemoryError: the program exceeded the sandbox memory limit\n")
        sys.stderr.flush()
    finally:
        os._exit(1)
except BaseException as exc:  # noqa: BLE001  (the program's error is the output)
    _print_guest_traceback(exc)
    sys.exit(1)
