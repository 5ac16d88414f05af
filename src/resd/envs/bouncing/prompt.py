"""The BouncingSim task statement (our own wording of the RL-Grok "function" prompt setting)."""

from __future__ import annotations

from resd.envs.bouncing.scene import Scene

TOLERANCE = 50.0
"""A timestamp passes when the mean distance between predicted and true centres is at most this."""
CALL_TIME_LIMIT = 1.0
"""Seconds one call of predict_position may take (the upstream verifier's per-test timeout)."""
ALLOWED_IMPORTS = ("math",)


def _pair(p: tuple[float, float]) -> str:
    return f"({p[0]:.2f}, {p[1]:.2f})"


def scene_prompt(scene: Scene) -> str:
    """The single user message for one scene."""
    vertices = ", ".join(_pair(v) for v in scene.vertices)
    balls = "\n".join(
        f"- ball {i}: position {_pair(p)}, velocity {_pair(v)}"
        for i, (p, v) in enumerate(zip(scene.positions, scene.velocities, strict=True))
    )
    n = len(scene.positions)
    return f"""## Bouncing balls: predict where they are

Write a Python function `predict_position(t)` that returns the centre of every ball at time `t` (seconds).

### How the world works
- Two dimensions; x grows to the right and y grows upwards. Lengths are in scene units, time in seconds, velocities in units per second.
- No gravity, no friction, no drag, no spin. Between collisions each ball moves in a straight line at constant velocity.
- The container is a fixed convex polygon; the balls never leave it.
- Wall collision: when a ball's centre comes within one radius of a wall, its velocity is mirrored about that wall, v' = v - 2 (v . n) n, where n is the wall's unit normal. Speed is unchanged.
- Ball-ball collision: all balls are identical discs (same radius, same mass). When two centres are two radii apart and approaching, the balls swap the velocity components along the line joining their centres and keep the perpendicular components (a perfectly elastic collision).

### The scene at t = 0
Container vertices, counter-clockwise: {vertices}
Ball radius: {scene.radius:.2f}
{balls}

### Rules for your program
- `predict_position(t)` returns a list of {n} `[x, y]` pairs, one per ball in the order above, each coordinate rounded to 2 decimals.
- It will be called with values of `t` between {min(scene.timestamps):.2f} and {max(scene.timestamps):.2f}, one call at a time and independently: keep no state between calls.
- The only module you may import is `math`. No other imports, no files, no input or output.
- Each call must return within {CALL_TIME_LIMIT:g} second.
- A call is correct when the mean distance between your centres and the true ones is at most {TOLERANCE:g} units.

Think it through, then give the complete program in a ```python code block. Only the last ```python block in your reply is run."""
