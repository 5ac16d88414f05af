"""The BouncingSim task statement, in our own words.

It states what the official prompt states (RL-Grok's "function" setting, as the RESD runs use
it): the container (sides, circumradius, centre, orientation 0), every object's shape (a regular
polygon with its number of sides and circumradius), start position and velocity, that objects do
not spin, no gravity, elastic contact between the polygons' outlines (not circles), the output
format and that every call is independent. Unlike the official text it also names the uniform
density (so a collision's outcome is determined) and the tolerance and time limit of the check;
both are facts of the official engine and verifier that its prompt leaves unsaid.
"""

from __future__ import annotations

from resd.envs.bouncing.scene import DENSITY, Scene

TOLERANCE = 50.0
"""A timestamp passes when the mean distance between predicted and true centres is at most this."""
CALL_TIME_LIMIT = 1.0
"""Seconds one call of predict_position may take (the official verifier's per-test timeout)."""
ALLOWED_IMPORTS = ("math",)
SHAPE_NAMES = {3: "triangle", 4: "square", 5: "pentagon", 6: "hexagon", 7: "heptagon", 8: "octagon"}


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def scene_prompt(scene: Scene) -> str:
    """The single user message for one scene."""
    cx, cy = scene.container_center
    r = scene.object_radius
    bodies = "\n".join(
        f"- Ball {i}: regular polygon with {b.sides} sides ({SHAPE_NAMES.get(b.sides, 'polygon')}), circumradius "
        f"{_number(r)}, centre ({_number(b.position[0])}, {_number(b.position[1])}), velocity "
        f"({b.velocity[0]:g}, {b.velocity[1]:g})"
        for i, b in enumerate(scene.bodies, start=1))
    n = len(scene.bodies)
    return f"""## Polygons bouncing in a polygon: predict where they are

Write a Python function `predict_position(t)` that returns the centre of every ball at time `t` (seconds after the start).

### The scene at t = 0
- Container: a fixed regular polygon with {scene.container_sides} sides, circumradius {_number(scene.container_radius)}, centred at ({_number(cx)}, {_number(cy)}). It never moves or turns.
{bodies}

### How the world works
- Two dimensions; x grows to the right, y grows upwards; lengths in metres, time in seconds, velocities in metres per second.
- Every polygon (container and balls) has orientation 0: its first vertex lies straight along +x from its centre, the others follow counter-clockwise at equal angles.
- The balls never rotate: they keep orientation 0 for ever and only translate.
- No gravity, no friction, no drag. Between contacts every ball moves in a straight line at constant velocity.
- Contacts are between the actual polygon outlines (a ball's vertex or edge touching a wall or another ball), not between circles around them.
- Every contact is perfectly elastic. Against a wall the velocity is mirrored about the wall: v' = v - 2 (v . n) n, with n the wall's unit normal. Between two balls the impulse acts along the contact normal; all balls have the same density ({_number(DENSITY)}), so a ball's mass is the area of its polygon.

### What your program must do
- `predict_position(t)` returns a list of {n} `[x, y]` pairs, ball 1 first, each coordinate rounded to 2 decimals.
- Every call is made on its own: compute the answer from the initial state each time and keep nothing between calls.
- Only the `math` module may be imported; no files, no input or output, no randomness.
- A call must return within {CALL_TIME_LIMIT:g} second; it is correct when the mean distance between your centres and the true ones is at most {TOLERANCE:g}.

Reason step by step, then give the complete program in a ```python code block. The last code block of your reply is the one that runs."""
