"""Ground truth for BouncingSim from Box2D, the rigid-body engine the official benchmark uses.

The world is set up as the official engine sets it up (facts read from horizon-llm/RESD,
`ballsim_pkg/simulation`): no gravity; the container a kinematic body carrying a closed chain
through its vertices, friction 0, restitution 1; each object a dynamic "bullet" body with fixed
rotation and one polygon fixture, density 1, friction 0, restitution 1, created in the scene's
order; steps of dt = 1/4000 s with 100 velocity and 100 position iterations. A timestamp t is
read after stepping while the accumulated time (dt added once per step, in floating point) is
below t, and positions are rounded to 2 decimals. With the same engine, the same set-up and the
same arithmetic the positions are the official ones (measured: identical on every scene of the
differential check, docs/environments.md).

Why Box2D and not pymunk (resd's engine before): Box2D is the official engine, so the positions
are the official ones to the last digit; pymunk 7.3.1 with the same shapes, masses and step was
within 0.8 of them on 24 official scenes (docs/environments.md), close but not the same numbers.
"""

from __future__ import annotations

import math

import Box2D

from resd.envs.bouncing.scene import DENSITY, STEP_CHECK_TIMES, STEP_CHECK_TOLERANCE, Scene, polygon_offsets

GROUND_TRUTH_STEP = 1.0 / 4000
"""The official ground-truth step."""
CHECK_STEP = 1.0 / 3000
"""The coarser step the official generator compares with, to reject step-size-sensitive scenes."""
SOLVER_ITERATIONS = 100
"""Velocity and position iterations per step (the official engine's)."""


def _world(scene: Scene) -> tuple[Box2D.b2World, list[Box2D.b2Body]]:
    world = Box2D.b2World(gravity=(0.0, 0.0), doSleep=True)
    container = world.CreateKinematicBody(position=scene.container_center, angle=0.0)
    container.CreateChainFixture(vertices_loop=polygon_offsets(scene.container_sides, scene.container_radius),
                                 friction=0.0, restitution=1.0)
    container.angularVelocity = 0.0
    bodies = []
    for b in scene.bodies:
        body = world.CreateDynamicBody(position=b.position, angularVelocity=0.0, linearVelocity=b.velocity)
        body.bullet = True
        body.fixedRotation = True
        body.CreatePolygonFixture(vertices=polygon_offsets(b.sides, scene.object_radius), density=DENSITY,
                                  restitution=1.0, friction=0.0)
        bodies.append(body)
    return world, bodies


def simulate(scene: Scene, times: tuple[float, ...] | list[float], dt: float = GROUND_TRUTH_STEP
             ) -> list[list[list[float]]]:
    """Object centres [[x, y], ...] at each of the ascending `times`, rounded to 2 decimals."""
    world, bodies = _world(scene)
    now = 0.0
    out = []
    for target in times:
        # Same stopping rule and the same running sum as stepping afresh for every timestamp.
        while now < target:
            world.Step(dt, SOLVER_ITERATIONS, SOLVER_ITERATIONS)
            world.ClearForces()
            now += dt
        out.append([[round(b.position.x, 2), round(b.position.y, 2)] for b in bodies])
    return out


def ground_truth(scene: Scene) -> list[list[list[float]]]:
    """Engine positions at the scene's timestamps."""
    return simulate(scene, scene.timestamps)


def checked_ground_truth(scene: Scene) -> list[list[list[float]]] | None:
    """Engine positions at the scene's timestamps, or None when the scene fails the official
    generator's step-size check: dt = 1/3000 and dt = 1/4000 must agree within 15 units for every
    object at t = 0.5, 1.0 and 1.5. One fine run serves both (the check times are read on the way)."""
    times = sorted(set(scene.timestamps) | set(STEP_CHECK_TIMES))
    fine = dict(zip(times, simulate(scene, times, GROUND_TRUTH_STEP), strict=True))
    coarse = simulate(scene, STEP_CHECK_TIMES, CHECK_STEP)
    for t, positions in zip(STEP_CHECK_TIMES, coarse, strict=True):
        if any(math.dist(p, q) > STEP_CHECK_TOLERANCE for p, q in zip(positions, fine[t], strict=True)):
            return None
    return [fine[t] for t in scene.timestamps]


def mean_distance(a: list[list[float]], b: list[list[float]]) -> float:
    """Mean Euclidean distance between corresponding objects."""
    return sum(math.dist(p, q) for p, q in zip(a, b, strict=True)) / len(a)
