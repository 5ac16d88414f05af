"""The sandbox: normal programs work, and every attack class is really tried and contained.

The operating-system layer (bubblewrap + seccomp) is tested with the audit hook switched off by
the program itself (the two-line bypass), so what holds is the kernel's boundary alone; the hook is
tested on its own in unsafe-local mode. Side effects are checked on the host: a root-only canary,
files outside the working directory, a host process that must survive, a loopback listener that
must receive nothing, and no process left behind.
"""

from __future__ import annotations

import ast
import os
import socket
import subprocess
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from resd.envs import sandbox
from resd.envs.sandbox import SandboxJob, SandboxPool, run_python

BYPASS = "import __main__\n__main__._hook.__code__ = (lambda *a, **k: None).__code__\n"
"""Switches the audit hook off (PEP 578 hooks are not a security boundary): what follows meets
only the operating system's isolation."""


@pytest.fixture(params=["bwrap", "unsafe-local"])
def mode(request, monkeypatch):
    monkeypatch.setenv("RESD_SANDBOX", request.param)
    return request.param


def bwrap(code: str, **kwargs) -> sandbox.SandboxResult:
    """Run with the OS layer only (hook disabled first)."""
    return run_python(BYPASS + code, mode="bwrap", **kwargs)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" not in f.read()
    except FileNotFoundError:
        return False


def _processes_mentioning(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if token.encode() in (entry / "cmdline").read_bytes() and _pid_alive(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def test_bwrap_is_available_here():
    """CI installs bubblewrap (.ci/run): the default mode must work, with every OS layer."""
    layers = sandbox.isolation("bwrap")
    assert layers.available, layers.reason
    assert layers.os_isolation and layers.separate_user and layers.no_network


# --- normal programs ---------------------------------------------------------------------------

def test_stdin_stdout_and_exit_code(mode):
    r = run_python("import sys\nname = input()\nprint('hi', name)\nsys.exit(3)", stdin="ada\n")
    assert r.stdout == "hi ada\n"
    assert r.exit_code == 3 and r.limit is None and not r.ok


def test_runtime_error_reports_guest_traceback_only(mode):
    r = run_python("def f():\n    return 1 / 0\nf()\n")
    assert r.exit_code == 1 and r.limit is None
    assert "ZeroDivisionError" in r.stderr
    assert 'File "main.py", line 2, in f' in r.stderr
    assert "_sandbox_boot" not in r.stderr and "exec(code" not in r.stderr


def test_extra_files_are_importable_and_working_dir_is_writable(mode):
    code = "import helper\nopen('out.txt', 'w').write('x' * 3)\nprint(helper.double(21), open('out.txt').read())"
    r = run_python(code, files={"helper.py": "def double(x):\n    return 2 * x\n", "pkg/data.txt": "d"})
    assert r.ok, r.stderr
    assert r.stdout.split() == ["42", "xxx"]


def test_standard_library_is_available(mode):
    code = "import json, math, re, collections, heapq, itertools, fractions, tempfile, decimal\n" \
           "print(json.dumps([math.isqrt(17)]))"
    r = run_python(code)
    assert r.ok, r.stderr
    assert r.stdout.strip() == "[4]"


def test_threads_work_including_the_stack_size_idiom(mode):
    code = textwrap.dedent("""
        import sys, threading
        sys.setrecursionlimit(10 ** 6)
        threading.stack_size(64 * 1024 * 1024)
        out = []
        def depth(n):
            return 0 if n == 0 else 1 + depth(n - 1)
        workers = [threading.Thread(target=lambda: out.append(depth(20000))) for _ in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        print(out)
    """)
    r = run_python(code, memory_mb=1024, wall_time=20)
    assert r.ok, r.stderr
    assert r.stdout.strip() == "[20000, 20000, 20000, 20000]"


def test_file_names_must_stay_inside_working_dir():
    for bad in ("../escape.py", "/etc/x.py", "main.py"):
        with pytest.raises(ValueError, match="relative path"):
            run_python("pass", files={bad: "x"})


def test_pool_runs_jobs_in_order():
    jobs = [SandboxJob(code=f"print({i} * {i})") for i in range(6)]
    with SandboxPool(workers=3) as pool:
        results = pool.map(jobs)
    assert [r.stdout.strip() for r in results] == [str(i * i) for i in range(6)]


def test_missing_isolation_is_one_clear_line(monkeypatch):
    from resd.errors import UserError

    sandbox.isolation.cache_clear()
    monkeypatch.setenv("PATH", "/nonexistent")  # no bwrap on the PATH
    try:
        with pytest.raises(UserError) as err:
            sandbox.require("bwrap")
        message = str(err.value)
        assert "\n" not in message and "apt-get install bubblewrap" in message and "unsafe-local" in message
        from resd.envs import get

        with pytest.raises(UserError, match="bubblewrap"):
            get("code")
    finally:
        sandbox.isolation.cache_clear()


# --- limits (both modes) -----------------------------------------------------------------------

def test_infinite_loop_hits_cpu_limit(mode):
    r = run_python("while True:\n    pass", wall_time=8, cpu_time=1)
    assert r.limit == "cpu_time" and r.exit_code < 0


def test_sleeping_program_hits_wall_clock_and_leaves_no_process(mode):
    token = f"resd_token_{uuid.uuid4().hex}.txt"
    r = run_python("import time\ntime.sleep(60)", wall_time=1, files={token: "x"})
    assert r.limit == "wall_time" and r.duration < 5
    time.sleep(0.2)
    assert _processes_mentioning(token) == []


def test_memory_bomb_hits_memory_limit(mode):
    r = run_python("blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 1024 * 1024))", memory_mb=256)
    assert r.limit == "memory"
    assert "MemoryError" in r.stderr


def test_deep_recursion_is_contained(mode):
    r = run_python("def f(n):\n    return f(n + 1)\nf(0)")
    assert r.exit_code == 1 and "RecursionError" in r.stderr
    r = run_python("import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return f(n + 1) + 1\nf(0)",
                   wall_time=3, cpu_time=1, memory_mb=256)
    assert r.exit_code != 0
    assert r.limit in ("memory", "cpu_time", "wall_time") or r.exit_code == -11  # SIGSEGV: C stack


def test_gigabytes_of_output_are_cut(mode):
    code = "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(4096):\n    sys.stdout.write(chunk)"
    r = run_python(code, max_output_bytes=200_000, wall_time=10)
    assert r.limit == "output"
    assert len(r.stdout) == 200_000


def test_huge_file_in_working_dir_hits_file_size_limit(mode):
    code = "with open('big.bin', 'wb') as f:\n    while True:\n        f.write(b'0' * (1 << 20))"
    r = run_python(code, max_file_bytes=4_000_000)
    assert r.limit == "output"


# --- the audit hook alone (unsafe-local): the second layer still stops the obvious attempts -------

@pytest.mark.parametrize("code", [
    "import os\nos.system('touch /tmp/resd-redteam-system')",
    "import subprocess\nsubprocess.run(['touch', '/tmp/resd-redteam-system'])",
    "import os\nos.execv('/bin/touch', ['touch', '/tmp/resd-redteam-system'])",
    "import ctypes\nctypes.CDLL(None).system(b'touch /tmp/resd-redteam-system')",
    "import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)",
    "import os\nos.kill(1, 9)",
    "import resource\nresource.setrlimit(resource.RLIMIT_CPU, (999, 999))",
])
def test_hook_layer_forbids_processes_sockets_signals_and_limits(code):
    r = run_python(code, mode="unsafe-local")
    assert r.limit == "forbidden", r
    assert not os.path.exists("/tmp/resd-redteam-system")


# --- the operating-system layer, with the hook switched off --------------------------------------

def test_the_hook_bypass_really_switches_the_hook_off():
    """Control: the same two lines defeat the hook when it is the only layer."""
    r = run_python(BYPASS + "import os\nprint(len(os.listdir('/')) > 3)", mode="unsafe-local")
    assert r.ok and r.stdout.strip() == "True"


def test_no_root_no_capabilities_own_pid_namespace():
    r = bwrap("import os\nst = open('/proc/self/status').read()\n"
              "print(os.getuid(), st.split('CapEff:')[1].split()[0], sorted(p for p in os.listdir('/proc') if p.isdigit()))")
    uid, caps, pids = r.stdout.split(maxsplit=2)
    assert r.ok and uid != "0" and int(caps, 16) == 0
    assert pids.strip() == "['1']"  # the program alone (it is the sandbox's init): no host process visible


def test_host_files_are_not_there(tmp_path):
    canary = tmp_path / "canary.txt"
    canary.write_text("s3cr3t")
    canary.chmod(0o600)
    import resd.envs.code_problems as answer_key

    for path in (canary, Path(answer_key.__file__), Path("/etc/passwd"), Path.home()):
        r = bwrap(f"print(open({str(path)!r}).read()[:20])")
        assert not r.ok and "s3cr3t" not in r.stdout and ("FileNotFoundError" in r.stderr
                                                           or "IsADirectoryError" in r.stderr)
    r = bwrap("import os\nprint(sorted(os.listdir('/')))")
    assert r.ok and r.stdout.strip() == "['dev', 'lib', 'lib64', 'proc', 'usr', 'work']"
    for module in ("resd", "Box2D", "torch"):  # host-side packages: the physics engine, the trainer
        assert "ModuleNotFoundError" in bwrap(f"import {module}").stderr


def test_writes_outside_the_working_dir_fail_and_disk_is_bounded(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    for code in (f"open({str(victim)!r}, 'w').write('owned')", "open('/dev/shm/x', 'w').write('x')",
                 "open('/tmp/x', 'w').write('x')", "open('/usr/lib/x', 'w').write('x')",
                 "import os\nos.remove('/usr/lib/os-release')"):
        assert not bwrap(code).ok, code
    assert victim.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["victim.txt"]
    fill = "f = open('big', 'wb')\nfor _ in range(100):\n    f.write(b'0' * (1 << 20))"
    r = bwrap(fill, max_disk_bytes=8_000_000, max_file_bytes=500_000_000)
    assert r.limit == "output" and "No space left" in r.stderr


def test_no_new_programs_or_processes_even_without_the_hook(tmp_path):
    marker = tmp_path / "spawned"
    for code in ("import os\nos.fork()", "import os\nos.execv('/usr/bin/python3', ['x'])",
                 "import subprocess\nsubprocess.run(['/usr/bin/python3', '-c', '1'])",
                 "import _posixsubprocess\nprint('imported')\nimport os\nos.posix_spawn('/bin/sh', ['sh'], {})"):
        r = bwrap(code)
        assert not r.ok and ("PermissionError" in r.stderr or "FileNotFoundError" in r.stderr), (code, r)
    assert not marker.exists()


def test_host_processes_cannot_be_signalled_and_survive():
    victim = subprocess.Popen(["sleep", "60"])
    try:
        r = bwrap("import os, signal\npid = int(input())\nos.kill(pid, signal.SIGKILL)", stdin=f"{victim.pid}\n")
        assert not r.ok and "ProcessLookupError" in r.stderr
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


def test_a_loopback_listener_receives_nothing():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(3)
    received = []

    def accept():
        try:
            conn, _ = server.accept()
            received.append(conn.recv(100))
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    port = server.getsockname()[1]
    r = bwrap(f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'leak')")
    thread.join()
    server.close()
    assert not r.ok and received == []


def test_sub_interpreters_dir_fd_and_finalisers_meet_the_same_walls(tmp_path):
    canary = tmp_path / "canary.txt"
    canary.write_text("s3cr3t")
    out = tmp_path / "late.txt"
    attacks = [
        f"import _xxsubinterpreters as s\ni = s.create()\ns.run_string(i, 'print(open({str(canary)!r}).read())')",
        f"import os\nfd = os.open('/', os.O_RDONLY)\nprint(os.open({str(canary)[1:]!r}, os.O_RDONLY, dir_fd=fd))",
        f"import atexit\natexit.register(lambda: open({str(out)!r}, 'w').write('x'))",
        f"class Late:\n    def __del__(self):\n        open({str(out)!r}, 'w').write('x')\nkeep = Late()",
    ]
    for code in attacks:
        r = bwrap(code)
        assert "s3cr3t" not in r.stdout, code
    assert not out.exists()


def test_a_thread_bomb_is_capped():
    code = textwrap.dedent("""
        import threading, time
        started = 0
        try:
            for _ in range(200):
                threading.Thread(target=time.sleep, args=(5,), daemon=True).start()
                started += 1
        except RuntimeError:
            pass
        print(started)
    """)
    r = bwrap(code, threads=8, wall_time=10)
    assert r.ok and int(r.stdout) <= 8


# --- every process of the sandbox is the program's own (the pid-1 hijack) ------------------------

HIJACK_SHELLCODE = bytes.fromhex(
    "b89d000000bf0100000031f60f05"  # prctl(PR_SET_PDEATHSIG, 0): survive bubblewrap's exit
    "b8390000000f05"                # fork(): denied to the program by its seccomp filter
    "b801000000bf01000000488d3510000000ba090000000f05"  # write(1, "HIJACKED\n", 9)
    "b8220000000f05ebf7"            # loop: pause()
    "48494a41434b45440a"            # "HIJACKED\n"
)
"""x86-64 code an attacker writes into another process of the sandbox through /proc/PID/mem, at
the address where that process will continue when its current system call returns."""

HIJACK = BYPASS + textwrap.dedent(f"""
    import os
    me = os.getpid()
    targets = [int(p) for p in os.listdir('/proc') if p.isdigit() and int(p) != me]
    for pid in targets:
        try:
            pc = int(open(f'/proc/{{pid}}/syscall').read().split()[-1], 16)
            with open(f'/proc/{{pid}}/mem', 'r+b', buffering=0) as mem:
                mem.seek(pc)
                mem.write({HIJACK_SHELLCODE!r})
            print('wrote into', pid)
        except OSError as exc:
            print('refused', pid, exc)
    print('targets', targets)
""")


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the injected code is x86-64 machine code")
def test_no_process_of_the_sandbox_can_be_hijacked_through_proc_mem():
    """The red team's escape: a program that passes its tests writes code into the sandbox's pid 1
    (then bubblewrap's own init: same user, no seccomp filter, no limits) which runs once the
    program has exited: denied system calls work and a process outlives `run_python`."""
    token = f"resd_token_{uuid.uuid4().hex}.txt"
    r = run_python(HIJACK, mode="bwrap", files={token: "x"}, wall_time=5)
    assert "targets" in r.stdout, r  # the attack ran to its end
    assert "HIJACKED" not in r.stdout and r.limit is None, r
    time.sleep(0.3)
    assert _processes_mentioning(token) == []


def test_the_program_cannot_outlive_the_call_by_dropping_its_death_signal():
    """The program is the sandbox's pid 1 and dies with bubblewrap (its death signal), which the
    host kills: clearing that signal would leave it running after `run_python` returns."""
    token = f"resd_token_{uuid.uuid4().hex}.txt"
    code = BYPASS + textwrap.dedent("""
        import ctypes, time
        print('prctl', ctypes.CDLL(None, use_errno=True).prctl(1, 0, 0, 0, 0), ctypes.get_errno(), flush=True)
        time.sleep(60)
    """)
    r = run_python(code, mode="bwrap", files={token: "x"}, wall_time=2)
    assert r.limit == "wall_time" and r.stdout.split() == ["prctl", "-1", "1"], r  # EPERM
    time.sleep(0.3)
    assert _processes_mentioning(token) == []


# --- memory outside the address space (shmem) ---------------------------------------------------

SHMEM_STASH = BYPASS + textwrap.dedent("""
    import ctypes, fcntl, os
    MB = 1 << 20
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    stash, keep = {}, []

    def add(route, n):
        stash[route] = stash.get(route, 0) + n

    for _ in range(40):  # memfd: shmem pages that no mapping holds
        try:
            fd = os.memfd_create('x')
            keep.append(fd)
            for _ in range(16):
                add('memfd', os.write(fd, b'x' * MB))
        except OSError:
            break
    for _ in range(40):  # System V shared memory: touched while attached, kept after detaching
        shmid = libc.shmget(0, 16 * MB, 0o1600)
        if shmid < 0:
            break
        address = libc.shmat(shmid, None, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            break
        ctypes.memset(address, 1, 16 * MB)
        libc.shmdt(ctypes.c_void_p(address))
        add('sysv', 16 * MB)
    for i in range(8):  # System V message queues
        queue = libc.msgget(0, 0o1600)
        if queue < 0:
            break
        message = ctypes.create_string_buffer(8 + 8192)
        message[0] = 1
        while libc.msgsnd(queue, message, 8192, 0o4000) == 0:  # IPC_NOWAIT
            add('msg', 8192)
    for i in range(8):  # POSIX shared memory
        try:
            with open(f'/dev/shm/x{i}', 'wb') as f:
                add('posix', f.write(b'x' * 16 * MB))
        except OSError:
            break
    for _ in range(20):  # pipe buffers grown to their largest
        r, w = os.pipe()
        keep += [r, w]
        try:
            fcntl.fcntl(w, 1031, MB)  # F_SETPIPE_SZ
        except OSError:
            pass
        os.set_blocking(w, False)
        try:
            while True:
                add('pipe', os.write(w, b'x' * 65536))
        except BlockingIOError:
            pass
    print(stash, sum(stash.values()) // MB)
""")


def test_memory_the_address_space_limit_misses_is_not_reachable():
    """memfd files, System V shared memory and message queues, POSIX shared memory and grown pipe
    buffers hold host memory that RLIMIT_AS does not count (red team: +600 MiB at 256 MiB)."""
    r = bwrap(SHMEM_STASH, memory_mb=256, wall_time=20)
    assert r.ok, r
    stash = ast.literal_eval(r.stdout.split("}")[0] + "}")
    assert list(stash) == ["pipe"] and stash["pipe"] <= 20 * 65536, stash  # default 64 KiB pipes only


def test_the_unsafe_local_control_shows_the_stash_attack_works():
    """Control: without the filter (unsafe-local) the same program stashes memory beyond its limit,
    so the bwrap test above measures a real attack."""
    r = run_python(SHMEM_STASH.replace("range(40)", "range(2)"), mode="unsafe-local", memory_mb=256, wall_time=20)
    assert r.ok, r
    stash = ast.literal_eval(r.stdout.split("}")[0] + "}")
    assert stash["memfd"] >= 16_000_000 and stash["sysv"] >= 32 << 20 and stash["pipe"] > 8 << 20, stash


@pytest.mark.skipif(os.geteuid() != 0, reason="unsafe-local changes user only when run as root")
def test_unsafe_local_separate_user_has_no_capabilities(tmp_path):
    """Red team: unsafe-local kept CAP_DAC_READ_SEARCH for its separate user, which then read a
    0600 root file in a 0700 folder while `separate_user=True` was reported."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    secret = private / "secret.txt"
    secret.write_text("s3cr3t")
    secret.chmod(0o600)
    assert sandbox.isolation("unsafe-local").separate_user
    code = BYPASS + f"print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])\n" \
                    f"print(open({str(secret)!r}).read())"
    r = run_python(code, mode="unsafe-local")
    assert int(r.stdout.split()[0], 16) == 0, r
    assert "s3cr3t" not in r.stdout and "PermissionError" in r.stderr, r
