"""Sandbox overhead: per-program cost of the OS sandbox (bubblewrap + seccomp) vs resd 0.1's
unisolated runner (`unsafe-local`: limits and the audit hook only), on the same programs.

Two programs, each run `--repeats` times per mode, modes interleaved so machine noise hits both:
a start-up-only program (`print(1)`: the cost every test of every code answer pays) and a short
compute program (a BouncingSim-sized 15-call harness's worth of arithmetic). Reported: median
milliseconds and the ratio bwrap / unsafe-local. No target: isolation is not optional; the line
tells what it costs.

    python benchmarks/sandbox_overhead.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Result, print_results  # noqa: E402

PROGRAMS = {
    "start-up only (print(1))": "print(1)",
    "short compute (2e5 float ops)": "s = 0.0\nfor i in range(200000):\n    s += (i % 7) * 0.5\nprint(s)",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="runs per program and mode (median reported)")
    args = parser.parse_args(argv)

    from resd.envs.sandbox import isolation, require, run_python

    require("bwrap")
    times: dict[tuple[str, str], list[float]] = {}
    for name, code in PROGRAMS.items():
        for mode in ("bwrap", "unsafe-local"):  # warm-up, untimed
            run_python(code, mode=mode)
        for _ in range(args.repeats):
            for mode in ("bwrap", "unsafe-local"):
                start = time.perf_counter()
                result = run_python(code, mode=mode)
                times.setdefault((name, mode), []).append(1000 * (time.perf_counter() - start))
                assert result.ok, result.stderr
    results = [Result(name, statistics.median(times[(name, "bwrap")]), statistics.median(times[(name, "unsafe-local")]),
                      "ms", None, higher_is_better=False, note="bwrap / unsafe-local")
               for name in PROGRAMS]
    layers = isolation("unsafe-local")
    print_results("sandbox overhead: bubblewrap + seccomp vs unisolated (audit hook + limits)", results,
                  {"repeats": args.repeats, "unsafe-local as root": f"separate user {layers.separate_user}, "
                                                                     f"no network {layers.no_network}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
