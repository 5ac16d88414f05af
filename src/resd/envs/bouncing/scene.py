"""BouncingSim scenes: a convex polygon container with equal balls flying inside (pure, seeded).

Parameters follow the MULTI_OBJ family of the RL-Grok/DELTA BouncingSim generator that RESD uses
(task-environments notes §2): a 1500 x 1500 scene, the container centred, container diameter
2.5 x 300 = 750, 3-6 sides, balls of radius 20, easy 3 balls at speed 400-600, medium 4-5 balls
at 600-800, 15 timestamps in about 0.5-2.1 s. That family sets no gravity (gravity is its own
axis, "D"), collisions are perfectly elastic and frictionless. Our balls are discs; the upstream
family also allows small polygons as objects, which we leave out.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from resd.envs.bouncing.elastic import trajectory

SCENE_SIZE = 1500.0
"""Width and height of the scene; the container is centred in it."""
CONTAINER_DIAMETER = 750.0
"""Circumscribed diameter of the container polygon (box_base_diameter 300 x factor 2.5)."""
BALL_RADIUS = 20.0
WALL_CLEARANCE = 4.0
"""Initial gap kept between a ball and every wall, so no scene starts in contact."""
BALL_GAP = 10.0
"""Initial gap kept between any two balls."""
N_TIMESTAMPS = 15
T_MIN, T_MAX = 0.5, 2.1
PERTURBATION = 0.01
"""Size of the nudges (to positions and velocities) used to test that a scene is well posed."""
SENSITIVITY_LIMIT = 5.0
"""Largest change in the answer those nudges may cause (mean-ball distance, any timestamp)."""
MAX_ATTEMPTS = 1000


@dataclass(frozen=True)
class Difficulty:
    """What differs between the easy and medium BouncingSim sets."""

    name: str
    balls: tuple[int, int]
    """Inclusive range of the number of balls."""
    speed: tuple[float, float]
    """Range of initial speeds (units per second)."""
    sides: tuple[int, int] = (3, 6)
    """Inclusive range of the number of container sides."""


EASY = Difficulty("easy", balls=(3, 3), speed=(400.0, 600.0))
MEDIUM = Difficulty("medium", balls=(4, 5), speed=(600.0, 800.0))


@dataclass(frozen=True)
class Scene:
    """Everything the prompt states and the ground truth is computed from (2-decimal numbers)."""

    vertices: tuple[tuple[float, float], ...]
    """Container polygon, counter-clockwise."""
    radius: float
    positions: tuple[tuple[float, float], ...]
    velocities: tuple[tuple[float, float], ...]
    timestamps: tuple[float, ...]

    def to_dict(self) -> dict:
        return {
            "vertices": [list(v) for v in self.vertices],
            "radius": self.radius,
            "positions": [list(p) for p in self.positions],
            "velocities": [list(v) for v in self.velocities],
            "timestamps": list(self.timestamps),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Scene":
        return cls(
            vertices=tuple((float(x), float(y)) for x, y in d["vertices"]),
            radius=float(d["radius"]),
            positions=tuple((float(x), float(y)) for x, y in d["positions"]),
            velocities=tuple((float(x), float(y)) for x, y in d["velocities"]),
            timestamps=tuple(float(t) for t in d["timestamps"]),
        )


def regular_polygon(sides: int, rotation: float, center: float = SCENE_SIZE / 2,
                    diameter: float = CONTAINER_DIAMETER) -> tuple[tuple[float, float], ...]:
    """Vertices of a regular polygon, counter-clockwise, rounded to 2 decimals."""
    r = diameter / 2
    return tuple(
        (round(center + r * math.cos(rotation + 2 * math.pi * k / sides), 2),
         round(center + r * math.sin(rotation + 2 * math.pi * k / sides), 2))
        for k in range(sides)
    )


def distance_to_walls(point: tuple[float, float], vertices: tuple[tuple[float, float], ...]) -> float:
    """Signed distance from a point to the nearest edge line of a CCW convex polygon (>0 inside)."""
    best = math.inf
    n = len(vertices)
    for i in range(n):
        (x1, y1), (x2, y2) = vertices[i], vertices[(i + 1) % n]
        length = math.hypot(x2 - x1, y2 - y1)
        # Left normal of a counter-clockwise edge points inwards.
        d = (-(y2 - y1) * (point[0] - x1) + (x2 - x1) * (point[1] - y1)) / length
        best = min(best, d)
    return best


def random_scene(rng: random.Random, difficulty: Difficulty) -> Scene:
    """Draw one scene: container, non-overlapping balls strictly inside, velocities, timestamps."""
    sides = rng.randint(*difficulty.sides)
    vertices = regular_polygon(sides, rng.uniform(0.0, 2 * math.pi / sides))
    xs = [v[0] for v in vertices]
    ys = [v[1] for v in vertices]
    n_balls = rng.randint(*difficulty.balls)
    positions: list[tuple[float, float]] = []
    while len(positions) < n_balls:
        # Rejection sampling; a triangle of circumradius 375 has room for far more than 5 balls.
        p = (round(rng.uniform(min(xs), max(xs)), 2), round(rng.uniform(min(ys), max(ys)), 2))
        if distance_to_walls(p, vertices) < BALL_RADIUS + WALL_CLEARANCE:
            continue
        if any(math.dist(p, q) < 2 * BALL_RADIUS + BALL_GAP for q in positions):
            continue
        positions.append(p)
    velocities = []
    for _ in range(n_balls):
        speed = rng.uniform(*difficulty.speed)
        angle = rng.uniform(0.0, 2 * math.pi)
        velocities.append((round(speed * math.cos(angle), 2), round(speed * math.sin(angle), 2)))
    times: set[float] = set()
    while len(times) < N_TIMESTAMPS:
        times.add(round(rng.uniform(T_MIN, T_MAX), 2))
    return Scene(vertices=vertices, radius=BALL_RADIUS, positions=tuple(positions),
                 velocities=tuple(velocities), timestamps=tuple(sorted(times)))


def is_well_posed(scene: Scene, rng: random.Random, trials: int = 2) -> bool:
    """True when nudging every initial number by up to PERTURBATION barely moves the answer.

    Several fast balls colliding with each other form a chaotic system: one ball-ball collision
    turns a tiny offset into a different bounce angle, and the next collision amplifies it again.
    In such a scene two correct solvers that differ only in rounding (or the physics engine at
    any practical step size) end up far apart, so it is not a fair test. Measured over 200
    draws with +-0.001 nudges: 1 easy and 35 medium scenes moved by more than 50 units.
    """
    base = trajectory(scene.vertices, scene.radius, scene.positions, scene.velocities, scene.timestamps)
    for _ in range(trials):
        positions = [(x + rng.uniform(-PERTURBATION, PERTURBATION), y + rng.uniform(-PERTURBATION, PERTURBATION))
                     for x, y in scene.positions]
        velocities = [(x + rng.uniform(-PERTURBATION, PERTURBATION), y + rng.uniform(-PERTURBATION, PERTURBATION))
                      for x, y in scene.velocities]
        nudged = trajectory(scene.vertices, scene.radius, positions, velocities, scene.timestamps)
        for a, b in zip(base, nudged, strict=True):
            if sum(math.dist(p, q) for p, q in zip(a, b, strict=True)) / len(a) > SENSITIVITY_LIMIT:
                return False
    return True


def draw_scene(difficulty: Difficulty, key: str) -> Scene:
    """The scene for one task id: deterministic in `key`, independent of every other task.

    Scenes that are not well posed (see `is_well_posed`) are redrawn; about 1 in 20 easy and
    2 in 3 medium draws are rejected, so medium keeps its many balls but not its chaotic cases.
    """
    for attempt in range(MAX_ATTEMPTS):
        rng = random.Random(f"{key}/{attempt}")
        scene = random_scene(rng, difficulty)
        if is_well_posed(scene, rng):
            return scene
    raise RuntimeError(f"no well-posed BouncingSim scene for {key!r} in {MAX_ATTEMPTS} draws")
