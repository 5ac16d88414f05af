"""Ground truth for BouncingSim from a real 2-D physics engine (pymunk / Chipmunk2D).

The container is a loop of static segments; balls are dynamic circles of equal mass with
elasticity 1 and friction 0 and no gravity. Positions are sampled at the scene's timestamps
while stepping with a small fixed dt (see STEP_LADDER for how small).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pymunk

from resd.envs.bouncing.elastic import trajectory
from resd.envs.bouncing.scene import Scene

def simulate_pymunk(scene: Scene, dt: float) -> list[list[list[float]]]:
    """Ball centres [[x, y], ...] at every timestamp of the scene, rounded to 2 decimals."""
    space = pymunk.Space()
    space.gravity = (0.0, 0.0)
    space.damping = 1.0  # no velocity loss between steps
    # Without this, Chipmunk lets overlapping contacts linger and pushes bodies apart slowly;
    # elastic bounces should resolve on the step they are detected.
    space.collision_slop = 0.0
    static = space.static_body
    n = len(scene.vertices)
    for i in range(n):
        wall = pymunk.Segment(static, scene.vertices[i], scene.vertices[(i + 1) % n], 0.0)
        wall.elasticity = 1.0
        wall.friction = 0.0
        space.add(wall)
    bodies = []
    for (x, y), (vx, vy) in zip(scene.positions, scene.velocities, strict=True):
        body = pymunk.Body(1.0, pymunk.moment_for_circle(1.0, 0.0, scene.radius))
        body.position = (x, y)
        body.velocity = (vx, vy)
        shape = pymunk.Circle(body, scene.radius)
        shape.elasticity = 1.0
        shape.friction = 0.0
        space.add(body, shape)
        bodies.append(body)
    out: list[list[list[float]]] = []
    now = 0.0
    for target in scene.timestamps:
        # Whole steps up to the timestamp, then one partial step so the sample lands exactly on it.
        while target - now > dt:
            space.step(dt)
            now += dt
        if target - now > 1e-12:
            space.step(target - now)
            now = target
        out.append([[round(b.position.x, 2), round(b.position.y, 2)] for b in bodies])
    return out


STEP_LADDER = (1.0 / 10_000, 1.0 / 40_000, 1.0 / 160_000)
"""Engine steps tried in order, finest last. Chipmunk finds a contact only after the shapes
overlap, so each collision is late by up to one step's travel; in a scene with several
ball-ball collisions that error is amplified (measured: 4-5 balls at 600-800/s, dt = 1/2000
leaves most medium scenes 50+ units off). Refining dt converges to the exact answer."""
CONVERGED = 5.0
"""A step size is accepted when the engine's trajectory is within this mean-ball distance of the
exact event-driven solution at every timestamp (a tenth of the 50-unit test tolerance)."""


@dataclass(frozen=True)
class GroundTruth:
    """Engine positions at each timestamp, with the step used and its distance to the exact model."""

    positions: list[list[list[float]]]
    dt: float
    gap_to_exact: float


def mean_distance(a: list[list[float]], b: list[list[float]]) -> float:
    """Mean Euclidean distance between corresponding balls (the verifier's check_distance)."""
    return sum(math.dist(p, q) for p, q in zip(a, b, strict=True)) / len(a)


def ground_truth(scene: Scene) -> GroundTruth:
    """pymunk positions at the scene's timestamps, at the coarsest step that has converged.

    Convergence is judged against `elastic.trajectory`, the exact solution of the same elastic
    model; if even the finest step has not converged, its positions are kept (and the gap is
    reported) rather than substituting the exact model for the engine.
    """
    exact = trajectory(scene.vertices, scene.radius, scene.positions, scene.velocities, scene.timestamps)
    result = None
    for dt in STEP_LADDER:
        engine = simulate_pymunk(scene, dt)
        gap = max(mean_distance(e, x) for e, x in zip(engine, exact, strict=True))
        result = GroundTruth(positions=engine, dt=dt, gap_to_exact=gap)
        if gap <= CONVERGED:
            break
    assert result is not None
    return result
