"""BouncingSim scenes: regular polygons flying inside a regular polygon container (pure, seeded).

The paper's BouncingSim-Easy/-Medium (RESD §4.1, Table 1) are the MULTI_OBJ family of the RL-Grok
BouncingSim benchmark, difficulty 1 and 2. The facts below are those of the official scene
generator (read from horizon-llm/RESD, `ballsim_pkg`; none of its code is used here):

- a 1500 x 1500 scene; one container, a regular polygon with 3-6 sides, circumradius 375
  (base diameter 300 x factor 2.5), centred at (750, 750), first vertex on +x, never moving;
- 3 objects (easy) or 4-5 (medium), each a regular polygon with 3-6 sides and circumradius 20,
  first vertex on +x, orientation fixed (they never spin), density 1 (so mass = polygon area);
- speed uniform in 400-600 (easy) or 600-800 (medium), rounded to 2 decimals, direction uniform;
- a start point drawn uniformly in radius (not area) inside the container's incircle shrunk by
  20 + 5, 44 apart from earlier ones, then moved by up to +-40 in x and y; the scene is redrawn
  when two objects end up closer than 45 or one leaves the shrunk incircle;
- positions rounded to integers, velocities to 2 decimals (the numbers the prompt states);
- no gravity, no friction, restitution 1;
- 15 timestamps 0.1, 0.2, ..., 1.5 s (the official generate.py: periodic, interval 0.1);
- a scene is kept only when the engine at dt = 1/3000 and at dt = 1/4000 agrees within 15 units
  for every object at t = 0.5, 1.0 and 1.5 (the official generator's step-size check).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

SCENE_SIZE = 1500.0
CONTAINER_CENTER = (750.0, 750.0)
CONTAINER_RADIUS = 375.0
"""Circumradius of the container (the official box_base_diameter 300 x factor 2.5, halved)."""
OBJECT_RADIUS = 20.0
"""Circumradius of every object polygon."""
SIDES = (3, 6)
"""Inclusive range of the number of sides, of the container and of every object."""
DENSITY = 1.0
PLACEMENT_MARGIN = 5.0
"""Start points keep this much room beyond one object radius from the container's incircle."""
PLACEMENT_GAP = 44.0
"""Minimum distance between two start points before their random offsets (2 radii + 4)."""
PLACEMENT_TRIES = 200
SPAWN_OFFSET = 40.0
"""Each start point is moved by a uniform offset in [-40, 40] on each axis (2 radii)."""
MIN_START_DISTANCE = 45.0
"""After the offsets, two objects closer than this (2 radii + 5) make the scene be redrawn."""
TIMESTAMPS = tuple(round(0.1 * (k + 1), 2) for k in range(15))
"""0.1 ... 1.5 s, the official generator's 15 periodic timestamps."""
STEP_CHECK_TIMES = (0.5, 1.0, 1.5)
STEP_CHECK_TOLERANCE = 15.0
MAX_ATTEMPTS = 500
"""Redraws allowed per scene (the official generator's max_retries)."""


@dataclass(frozen=True)
class Difficulty:
    """What differs between BouncingSim-Easy and -Medium (official MULTI_OBJ levels 1 and 2)."""

    name: str
    level: int
    """The official difficulty number (0 basic ... 4 extreme), stored in records."""
    objects: tuple[int, int]
    """Inclusive range of the number of objects."""
    speed: tuple[float, float]
    """Range of initial speeds (units per second)."""


EASY = Difficulty("easy", level=1, objects=(3, 3), speed=(400.0, 600.0))
MEDIUM = Difficulty("medium", level=2, objects=(4, 5), speed=(600.0, 800.0))


@dataclass(frozen=True)
class Body:
    """One object at t = 0: a regular polygon of circumradius OBJECT_RADIUS."""

    sides: int
    position: tuple[float, float]
    velocity: tuple[float, float]


@dataclass(frozen=True)
class Scene:
    """Everything the prompt states and the engine simulates."""

    container_sides: int
    bodies: tuple[Body, ...]
    timestamps: tuple[float, ...] = TIMESTAMPS
    container_center: tuple[float, float] = CONTAINER_CENTER
    container_radius: float = CONTAINER_RADIUS
    object_radius: float = OBJECT_RADIUS

    def to_config(self) -> dict[str, Any]:
        """The scene in the official scene-file layout (physics / boxes / balls / meta), so a
        record's `scene_config` reads the same whichever generator wrote it."""
        cx, cy = self.container_center
        return {
            "physics": {"gravity_enabled": False, "gravity_x": 0.0, "gravity_y": 0.0},
            "boxes": [{"center": [_plain(cx), _plain(cy)], "diameter": _plain(2 * self.container_radius),
                       "sides": self.container_sides, "rotation": 0.0, "friction": 0.0, "restitution": 1.0,
                       "rotation_speed": 0.0}],
            "balls": [{"position": [_plain(b.position[0]), _plain(b.position[1])],
                       "velocity": [b.velocity[0], b.velocity[1]], "radius": self.object_radius,
                       "density": DENSITY, "restitution": 1.0, "sides": b.sides, "rotation_affected": False}
                      for b in self.bodies],
            "meta": {"scene_type": "G", "timestamps": list(self.timestamps)},
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], timestamps: tuple[float, ...] | None = None) -> "Scene":
        """Read a scene in the official layout; ValueError when it is not a single fixed container
        holding fixed-rotation regular polygons without gravity (the only kind BouncingSim poses)."""
        try:
            boxes, balls = config["boxes"], config["balls"]
            if len(boxes) != 1 or not balls:
                raise ValueError("one container and at least one object expected")
            box = boxes[0]
            if float(box.get("rotation", 0.0)) != 0.0 or float(box.get("rotation_speed", 0.0)) != 0.0 \
                    or box.get("translation_path"):
                raise ValueError("the container must not rotate or move")
            physics = config.get("physics", {}) or {}
            if physics.get("gravity_enabled") and (physics.get("gravity_x") or physics.get("gravity_y")):
                raise ValueError("scenes with gravity are not BouncingSim Easy/Medium scenes")
            radii = {float(b["radius"]) for b in balls}
            if len(radii) != 1:
                raise ValueError("all objects must share one radius")
            bodies = []
            for b in balls:
                sides = int(b["sides"])
                if not 3 <= sides <= 8 or float(b.get("angular_velocity", 0.0) or 0.0) != 0.0:
                    raise ValueError("objects must be non-spinning regular polygons with 3-8 sides")
                bodies.append(Body(sides, (float(b["position"][0]), float(b["position"][1])),
                                   (float(b["velocity"][0]), float(b["velocity"][1]))))
            stamps = timestamps if timestamps is not None else tuple(
                float(t) for t in (config.get("meta") or {}).get("timestamps", TIMESTAMPS))
            return cls(container_sides=int(box["sides"]), bodies=tuple(bodies), timestamps=tuple(stamps),
                       container_center=(float(box["center"][0]), float(box["center"][1])),
                       container_radius=float(box["diameter"]) / 2, object_radius=radii.pop())
        except (KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"not a BouncingSim scene: {type(exc).__name__}: {exc}") from exc


def _plain(x: float) -> int | float:
    """Integers as ints (positions and the container are integers in the official files)."""
    return int(x) if float(x).is_integer() else x


def polygon_offsets(sides: int, radius: float) -> list[tuple[float, float]]:
    """Vertices of a regular polygon around its centre, counter-clockwise, first on +x.

    Written as i * (2 pi / sides), the way the official engine writes them, so the engine sees
    bit-identical shapes (Box2D's answer depends on the last bit in chaotic scenes)."""
    step = 2 * math.pi / sides
    return [(radius * math.cos(i * step), radius * math.sin(i * step)) for i in range(sides)]


def polygon_area(sides: int, radius: float) -> float:
    return 0.5 * sides * radius * radius * math.sin(2 * math.pi / sides)


def _start_points(rng: random.Random, count: int, container_sides: int) -> list[tuple[float, float]] | None:
    inradius = CONTAINER_RADIUS * math.cos(math.pi / container_sides)
    allowed = inradius - OBJECT_RADIUS - PLACEMENT_MARGIN
    points: list[tuple[float, float]] = []
    for _ in range(count):
        for _try in range(PLACEMENT_TRIES):
            r, angle = rng.uniform(0.0, allowed), rng.uniform(0.0, 2 * math.pi)
            p = (CONTAINER_CENTER[0] + r * math.cos(angle), CONTAINER_CENTER[1] + r * math.sin(angle))
            if all(math.dist(p, q) >= PLACEMENT_GAP for q in points):
                points.append(p)
                break
        else:
            return None
    return points


def random_scene(rng: random.Random, difficulty: Difficulty) -> Scene | None:
    """One draw (before the engine's step-size check); None when it must be redrawn."""
    count = rng.randint(*difficulty.objects)
    container_sides = rng.randint(*SIDES)
    points = _start_points(rng, count, container_sides)
    if points is None:
        return None
    raw = []
    for x, y in points:
        speed = round(rng.uniform(*difficulty.speed), 2)
        angle = rng.uniform(0.0, 2 * math.pi)
        dx, dy = rng.uniform(-SPAWN_OFFSET, SPAWN_OFFSET), rng.uniform(-SPAWN_OFFSET, SPAWN_OFFSET)
        raw.append(((x + dx, y + dy), (speed * math.cos(angle), speed * math.sin(angle)), rng.randint(*SIDES)))
    allowed = CONTAINER_RADIUS * math.cos(math.pi / container_sides) - OBJECT_RADIUS - PLACEMENT_MARGIN
    for i, (p, _, _) in enumerate(raw):
        if math.dist(p, CONTAINER_CENTER) > allowed:
            return None
        if any(math.dist(p, q) < MIN_START_DISTANCE for q, _, _ in raw[:i]):
            return None
    bodies = tuple(Body(sides, (float(round(p[0])), float(round(p[1]))), (round(v[0], 2), round(v[1], 2)))
                   for p, v, sides in raw)
    return Scene(container_sides=container_sides, bodies=bodies)


def draw_scene(difficulty: Difficulty, key: str) -> tuple[Scene, list[list[list[float]]]]:
    """The scene for one task and its ground truth: deterministic in `key`, independent of every
    other task. Draws are repeated until one passes the placement rules and the engine's
    step-size check."""
    from resd.envs.bouncing.engine import checked_ground_truth  # the engine imports this module

    for attempt in range(MAX_ATTEMPTS):
        scene = random_scene(random.Random(f"{key}/{attempt}"), difficulty)
        truth = checked_ground_truth(scene) if scene is not None else None
        if scene is not None and truth is not None:
            return scene, truth
    raise RuntimeError(f"no BouncingSim scene for {key!r} in {MAX_ATTEMPTS} draws")
