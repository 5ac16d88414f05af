"""The sandbox: normal programs work; each attack is really tried, contained and reported."""

from __future__ import annotations

import os
import textwrap

import pytest

from resd.envs import sandbox
from resd.envs.sandbox import Isolation, SandboxJob, SandboxPool, run_python


@pytest.fixture(params=["os_layers", "hook_only"])
def mode(request, monkeypatch):
    """Run each red-team test with every layer this machine has, then with the audit hook alone
    (what a non-root user gets), so both lines of defence are tested on their own."""
    if request.param == "hook_only":
        monkeypatch.setattr(sandbox, "isolation", lambda: Isolation(separate_user=False, no_network=False))
    return request.param


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes (it holds no CPU, memory or files).
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" not in f.read()
    except FileNotFoundError:
        return False


# --- normal programs ---------------------------------------------------------------------------

def test_stdin_stdout_and_exit_code():
    r = run_python("import sys\nname = input()\nprint('hi', name)\nsys.exit(3)", stdin="ada\n")
    assert r.stdout == "hi ada\n"
    assert r.exit_code == 3 and r.limit is None and not r.ok


def test_runtime_error_reports_guest_traceback_only():
    r = run_python("def f():\n    return 1 / 0\nf()\n")
    assert r.exit_code == 1 and r.limit is None
    assert "ZeroDivisionError" in r.stderr
    assert 'File "main.py", line 2, in f' in r.stderr
    assert "_sandbox_boot" not in r.stderr and "exec(code" not in r.stderr


def test_extra_files_are_importable_and_working_dir_is_writable():
    code = "import helper\nopen('out.txt', 'w').write('x' * 3)\nprint(helper.double(21), open('out.txt').read())"
    r = run_python(code, files={"helper.py": "def double(x):\n    return 2 * x\n"})
    assert r.ok, r.stderr
    assert r.stdout.split() == ["42", "xxx"]


def test_standard_library_is_available():
    code = "import json, math, re, collections, heapq, itertools, fractions, tempfile\nprint(json.dumps([math.isqrt(17)]))"
    r = run_python(code)
    assert r.ok, r.stderr
    assert r.stdout.strip() == "[4]"


def test_file_names_must_stay_inside_working_dir():
    with pytest.raises(ValueError, match="relative path"):
        run_python("pass", files={"../escape.py": "x"})


def test_pool_runs_jobs_in_order():
    jobs = [SandboxJob(code=f"print({i} * {i})") for i in range(6)]
    with SandboxPool(workers=3) as pool:
        results = pool.map(jobs)
    assert [r.stdout.strip() for r in results] == [str(i * i) for i in range(6)]


# --- red team ----------------------------------------------------------------------------------

def test_infinite_loop_hits_cpu_limit(mode):
    r = run_python("while True:\n    pass", wall_time=8, cpu_time=1)
    assert r.limit == "cpu_time" and r.exit_code < 0


def test_sleeping_program_hits_wall_clock_and_leaves_no_process(mode):
    r = run_python("import os, sys, time\nprint(os.getpid(), flush=True)\ntime.sleep(60)", wall_time=1)
    assert r.limit == "wall_time"
    assert r.duration < 5
    assert not _pid_alive(int(r.stdout.split()[0]))


def test_fork_bomb_is_stopped(mode):
    if mode == "os_layers":
        code = "import os\nwhile True:\n    os.fork()"
    else:  # with only the hook as root, a failure must not hurt the machine: bounded attempt
        code = "import os\nfor _ in range(5):\n    if os.fork() == 0:\n        os._exit(0)"
    r = run_python(code, wall_time=5)
    assert r.limit == "forbidden"
    assert "os.fork" in r.stderr


@pytest.mark.parametrize("code", [
    "import os\nos.system('touch /tmp/resd-redteam-system')",
    "import subprocess\nsubprocess.run(['touch', '/tmp/resd-redteam-system'])",
    "import os\nos.execv('/bin/touch', ['touch', '/tmp/resd-redteam-system'])",
    "import os\nos.posix_spawn('/bin/touch', ['touch', '/tmp/resd-redteam-system'], {})",
    "import ctypes\nctypes.CDLL(None).system(b'touch /tmp/resd-redteam-system')",
])
def test_starting_processes_is_forbidden(mode, code):
    r = run_python(code)
    assert r.limit == "forbidden", r
    assert not os.path.exists("/tmp/resd-redteam-system")


def test_memory_bomb_hits_memory_limit(mode):
    r = run_python("blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 1024 * 1024))", memory_mb=256)
    assert r.limit == "memory"
    assert "MemoryError" in r.stderr


def test_writing_and_deleting_outside_working_dir_is_forbidden(mode, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    attacks = [
        f"open({str(victim)!r}, 'w').write('owned')",
        f"open({str(victim)!r}, 'a').write('owned')",
        f"import os\nos.remove({str(victim)!r})",
        f"import os\nos.rename({str(victim)!r}, 'stolen.txt')",
        f"import shutil\nshutil.rmtree({str(tmp_path)!r})",
        f"import os\nfd = os.open({str(tmp_path / 'new.txt')!r}, os.O_WRONLY | os.O_CREAT)",
        f"import os\nos.symlink({str(victim)!r}, 'link')\nopen('link', 'w').write('owned')",
        "open('../escaped.txt', 'w').write('owned')",
    ]
    for code in attacks:
        r = run_python(code)
        assert r.limit == "forbidden", (code, r)
    assert victim.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim.txt"]


def test_reading_host_files_and_environment_is_blocked(mode, monkeypatch, tmp_path):
    monkeypatch.setenv("RESD_TEST_SECRET", "s3cr3t-token")
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cr3t-file")
    r = run_python("import os\nprint(sorted(os.environ))\nprint(os.environ['HOME'] == os.getcwd())")
    assert r.ok and "s3cr3t-token" not in r.stdout
    assert r.stdout.split("\n")[:2] == ["['HOME', 'LANG', 'PATH', 'TMPDIR']", "True"]
    r = run_python(f"print(open({str(secret)!r}).read())")
    assert r.limit == "forbidden" and "s3cr3t-file" not in r.stdout
    r = run_python("print(open('/proc/1/environ', 'rb').read())")
    assert r.limit == "forbidden"


def test_sockets_are_forbidden(mode):
    r = run_python("import socket\ns = socket.create_connection(('127.0.0.1', 22), timeout=1)")
    assert r.limit == "forbidden"
    assert "socket" in r.stderr


def test_signals_and_limit_changes_are_forbidden(mode):
    assert run_python("import os\nos.kill(1, 9)").limit == "forbidden"
    assert run_python("import resource\nresource.setrlimit(resource.RLIMIT_CPU, (999, 999))").limit == "forbidden"


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
    r = run_python("import sys\nwhile True:\n    sys.stderr.write('e' * 100000)", max_output_bytes=50_000)
    assert r.limit == "output" and len(r.stderr) == 50_000


def test_huge_file_in_working_dir_hits_file_size_limit(mode):
    code = "with open('big.bin', 'wb') as f:\n    while True:\n        f.write(b'0' * (1 << 20))"
    r = run_python(code, max_file_bytes=4_000_000)
    assert r.limit == "output"


def test_hook_cannot_be_disabled_by_patching_modules(mode, tmp_path):
    victim = tmp_path / "v.txt"
    victim.write_text("keep")
    code = textwrap.dedent(f"""
        import os, posixpath, builtins
        os.getcwd = lambda: {str(tmp_path)!r}
        posixpath.normpath = lambda p: {str(tmp_path)!r}
        builtins.isinstance = lambda *a: False
        open({str(victim)!r}, 'w').write('owned')
    """)
    r = run_python(code)
    assert r.limit == "forbidden"
    assert victim.read_text() == "keep"
