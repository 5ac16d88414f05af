"""BouncingSim scoring as pure functions: find the program, refuse forbidden code, judge results.

Running the program is the environment's job (`resd.envs.bouncingsim`); everything here is
deterministic and side-effect free, so it can be tested on hand-made harness results.
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from resd.envs.base import Outcome, clip_feedback
from resd.envs.text import extract_python
from resd.envs.bouncing.engine import mean_distance
from resd.envs.bouncing.prompt import ALLOWED_IMPORTS, CALL_TIME_LIMIT, TOLERANCE
from resd.envs.bouncing.scene import Scene, distance_to_walls

# Built-ins that would give the program I/O or a way around the import rule.
FORBIDDEN_CALLS = ("__import__", "open", "exec", "eval", "compile", "input", "breakpoint")
INTROSPECTION = frozenset({"f_back", "f_globals", "f_locals", "tb_frame", "gi_frame", "cr_frame", "__globals__",
                           "__subclasses__", "__traceback__", "__builtins__", "__code__", "__closure__"})
"""Names that reach the judge's own frames from inside the program (to forge a result). The
program shares an interpreter with the harness, so this raises the bar; it is not a proof."""
MAX_FAILURES_SHOWN = 3
MAX_HINTS = 4
PENETRATION_SLACK = 1.0
"""How far (units) a predicted ball may poke into a wall or another ball before we call it a miss."""


def extract_program(completion: str) -> str | None:
    """The last closed ```python (or bare ```) block after the reasoning; None when there is none."""
    program = extract_python(completion, allow_unclosed=False)
    return program.strip("\n") if program is not None else None


def static_problems(program: str) -> str | None:
    """Why the program is refused before running it (syntax, forbidden imports/calls), or None."""
    try:
        tree = ast.parse(program)
    except SyntaxError as exc:
        line = (exc.text or "").rstrip()
        return f"SyntaxError: {exc.msg} (line {exc.lineno}){': ' + line.strip() if line else ''}"
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, surrogates, absurd nesting
        return f"SyntaxError: the program cannot be parsed ({type(exc).__name__})"
    for node in ast.walk(tree):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or "." * node.level]
        for module in modules:
            if module.split(".")[0] not in ALLOWED_IMPORTS:
                return (f"the program imports {module!r} (line {node.lineno}); only "
                        f"{', '.join(ALLOWED_IMPORTS)} may be imported")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS:
            return f"the program calls {node.func.id}() (line {node.lineno}), which is not allowed"
        name = (node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name)
                else node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None)
        if name in INTROSPECTION:
            return f"the program uses {name!r} (line {node.lineno}); interpreter introspection is not allowed"
    defines = any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == "predict_position"
                  for n in tree.body) or any(
        isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "predict_position" for t in n.targets)
        for n in tree.body)
    if not defines:
        return "the program does not define predict_position(t) at the top level"
    return None


def parse_results(payload: str, n_times: int, n_balls: int) -> list[dict[str, Any]] | None:
    """The harness's result line, checked: one {"status": ...} per timestamp and, for "ok", a
    list of finite [x, y] pairs (a wrong count is the judge's to report, up to 4 x `n_balls`).
    None for anything else (the program may have printed a forged line); never raises."""
    try:
        parsed = json.loads(payload)
    except (ValueError, RecursionError, MemoryError):
        return None
    if not isinstance(parsed, list) or len(parsed) != n_times:
        return None
    clean = []
    for item in parsed:
        if not isinstance(item, dict) or not isinstance(item.get("status"), str):
            return None
        if item["status"] != "ok":
            clean.append({"status": item["status"][:40], "message": str(item.get("message", ""))[:800]})
            continue
        value = item.get("value")
        if not (isinstance(value, list) and len(value) <= 4 * n_balls and all(
                isinstance(p, list) and len(p) == 2 and all(
                    isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in p)
                for p in value)):
            return None
        clean.append({"status": "ok", "value": [[float(x), float(y)] for x, y in value]})
    return clean


@dataclass(frozen=True)
class Check:
    """The verdict on one timestamp."""

    t: float
    passed: bool
    distance: float | None = None
    """Mean distance over balls; None when there was no usable prediction."""
    per_ball: tuple[float, ...] = ()
    predicted: tuple[tuple[float, float], ...] = ()
    problem: str = ""
    """Error, timeout or bad-return message when there was no usable prediction."""


def check_timestamps(scene: Scene, truth: list[list[list[float]]], results: list[dict[str, Any]]) -> list[Check]:
    """Compare each harness result with the ground truth (mean ball distance <= TOLERANCE)."""
    checks = []
    n_balls = len(scene.positions)
    for t, expected, result in zip(scene.timestamps, truth, results, strict=True):
        status = result.get("status")
        if status != "ok":
            checks.append(Check(t=t, passed=False, problem=f"{status}: {result.get('message', '')}".strip()))
            continue
        value = result["value"]
        if len(value) != n_balls:
            checks.append(Check(t=t, passed=False,
                                problem=f"bad_return: returned {len(value)} positions, the scene has {n_balls} balls"))
            continue
        per_ball = tuple(round(math.dist(p, q), 3) for p, q in zip(value, expected, strict=True))
        distance = round(mean_distance(value, expected), 3)  # rounded as the upstream verifier does
        checks.append(Check(t=t, passed=distance <= TOLERANCE, distance=distance, per_ball=per_ball,
                            predicted=tuple((p[0], p[1]) for p in value)))
    return checks


def collision_hints(scene: Scene, check: Check) -> list[str]:
    """Plain-language guesses at which collision a failing prediction missed."""
    hints = []
    r = scene.radius
    for i, p in enumerate(check.predicted):
        free = (scene.positions[i][0] + scene.velocities[i][0] * check.t,
                scene.positions[i][1] + scene.velocities[i][1] * check.t)
        depth = r - distance_to_walls(p, scene.vertices)
        if math.dist(p, free) <= PENETRATION_SLACK and check.per_ball[i] > TOLERANCE:
            hints.append(f"ball {i} moves as if it never collided with anything (t={check.t:.2f})")
        elif depth > PENETRATION_SLACK:
            where = "outside the container" if depth > r else f"{depth:.1f} units into a wall"
            hints.append(f"ball {i} is predicted {where} at t={check.t:.2f}: a wall bounce was missed")
    for i in range(len(check.predicted)):
        for j in range(i + 1, len(check.predicted)):
            gap = math.dist(check.predicted[i], check.predicted[j])
            if gap < 2 * r - PENETRATION_SLACK:
                hints.append(f"balls {i} and {j} overlap at t={check.t:.2f} ({gap:.1f} apart, less than two "
                             f"radii): a ball-ball collision was missed")
    return hints


def _trend(checks: list[Check]) -> str | None:
    """Does the error grow with time? Judged on the timestamps that returned a prediction."""
    measured = [(c.t, c.distance) for c in checks if c.distance is not None]
    if len(measured) < 3:
        return None
    ts = [t for t, _ in measured]
    ds = [d for _, d in measured]
    mt, md = sum(ts) / len(ts), sum(ds) / len(ds)
    st = math.sqrt(sum((t - mt) ** 2 for t in ts))
    sd = math.sqrt(sum((d - md) ** 2 for d in ds))
    corr = sum((t - mt) * (d - md) for t, d in measured) / (st * sd) if st > 0 and sd > 0 else 0.0
    first, last = measured[0], measured[-1]
    if corr > 0.5 and last[1] > first[1]:
        return (f"The error grows with time (mean distance {first[1]:.1f} at t={first[0]:.2f}, "
                f"{last[1]:.1f} at t={last[0]:.2f}): a small early mistake, or a missed bounce, compounds.")
    if first[1] > TOLERANCE:
        return (f"The error is already {first[1]:.1f} at the earliest time t={first[0]:.2f}: check the "
                f"initial state, the units and the axis directions before the collision logic.")
    return "The error does not grow steadily with time: it comes from particular collisions, not from drift."


def _format_failure(check: Check) -> str:
    if check.distance is None:
        return f"- t={check.t:.2f}: {check.problem}"
    balls = ", ".join(f"ball {i} {d:.1f}" for i, d in enumerate(check.per_ball))
    return f"- t={check.t:.2f}: mean distance {check.distance:.1f} (per ball: {balls})"


def _first_hints(scene: Scene, failing: list[Check]) -> list[str]:
    """The earliest hint of each kind per ball (or pair), so a miss is named once, when it starts."""
    seen: set[str] = set()
    hints = []
    for check in failing:
        if check.distance is None:
            continue
        for hint in collision_hints(scene, check):
            kind = re.sub(r" at t=[0-9.]+| \(t=[0-9.]+\)| \([0-9.]+ apart[^)]*\)|[0-9.]+ units into", "", hint)
            if kind not in seen:
                seen.add(kind)
                hints.append(hint)
    return hints[:MAX_HINTS]


def feedback_text(scene: Scene, checks: list[Check]) -> str:
    """Judge-style feedback: score, pass/fail boundary, trend, and the first failing timestamps."""
    n = len(checks)
    k = sum(c.passed for c in checks)
    lines = [f"Passed {k}/{n} timestamps (a timestamp passes when the mean distance between your "
             f"centres and the true ones is at most {TOLERANCE:g} units)."]
    if k == n:
        return lines[0]
    failing = [c for c in checks if not c.passed]
    first_fail = failing[0]
    passed_before = [c for c in checks if c.passed and c.t < first_fail.t]
    if passed_before:
        lines.append(f"Correct up to t={passed_before[-1].t:.2f}; first failure at t={first_fail.t:.2f}.")
    else:
        lines.append(f"Already wrong at the first timestamp, t={first_fail.t:.2f}.")
    trend = _trend(checks)
    if trend:
        lines.append(trend)
    timeouts = sum(c.problem.startswith("timeout") for c in checks)
    if timeouts:
        lines.append(f"{timeouts} call(s) timed out or were skipped after repeated timeouts: each call must "
                     f"finish within {CALL_TIME_LIMIT:g} s (jump from collision to collision, or use a "
                     f"coarser time step).")
    lines.append(f"First failing timestamps ({min(MAX_FAILURES_SHOWN, len(failing))} of {len(failing)}):")
    lines += [_format_failure(c) for c in failing[:MAX_FAILURES_SHOWN]]
    hints = _first_hints(scene, failing)
    if hints:
        lines.append("Hints:")
        lines += [f"- {h}" for h in hints]
    return "\n".join(lines)


def refused(reason: str, kind: str, n_tests: int) -> Outcome:
    """An Outcome for a program that was not run at all."""
    return Outcome(reward=0.0, acc=0.0, feedback=clip_feedback(f"Passed 0/{n_tests} timestamps: {reason}."),
                   passed=[False] * n_tests, details={"error": kind, "reason": reason})


def outcome(scene: Scene, checks: list[Check], reward_mode: str) -> Outcome:
    passed = [c.passed for c in checks]
    acc = sum(passed) / len(passed)
    reward = acc if reward_mode == "fraction" else float(all(passed))
    return Outcome(reward=reward, acc=acc, feedback=clip_feedback(feedback_text(scene, checks)), passed=passed,
                   details={"distances": [c.distance for c in checks],
                            "problems": [c.problem for c in checks],
                            "timestamps": list(scene.timestamps)})
