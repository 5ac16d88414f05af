"""Exact event-driven motion of equal hard discs inside a convex polygon (pure `math`).

This module is the BouncingSim reference solution: `BouncingSim.reference_solution(task)` ships
this file's text verbatim, followed by a `predict_position(t)` that calls `simulate` with the
scene's numbers. So it must stay self-contained: standard library `math` only, no other imports,
no module-level state.

Model (the one the prompt states): no gravity, no friction, perfectly elastic collisions.
- Ball-wall: the velocity is mirrored about the wall, v' = v - 2 (v . n) n, when the ball's
  centre comes within one radius of the wall line (n = the wall's inward unit normal).
- Ball-ball (equal masses): the components of the two velocities along the line of centres are
  swapped when the centres are two radii apart; the tangential components are unchanged.
Between events every ball moves in a straight line, so the state is advanced from one collision
to the next exactly (up to floating point), instead of integrating with a time step.
"""

import math


def inward_walls(vertices):
    """(point on wall, inward unit normal) for each edge of a convex polygon in either winding."""
    area2 = 0.0
    count = len(vertices)
    for i in range(count):
        x1, y1 = vertices[i]
        x2, y2 = vertices[(i + 1) % count]
        area2 += x1 * y2 - x2 * y1
    # Counter-clockwise polygons have their interior to the left of each edge.
    side = 1.0 if area2 > 0 else -1.0
    walls = []
    for i in range(count):
        x1, y1 = vertices[i]
        x2, y2 = vertices[(i + 1) % count]
        length = math.hypot(x2 - x1, y2 - y1)
        normal = (-(y2 - y1) * side / length, (x2 - x1) * side / length)
        walls.append(((x1, y1), normal))
    return walls


def time_to_wall(position, velocity, wall, radius):
    """Time until the disc touches the wall, or None when it is moving away from it."""
    (ax, ay), (nx, ny) = wall
    approach = velocity[0] * nx + velocity[1] * ny
    if approach >= 0.0:
        return None
    gap = (position[0] - ax) * nx + (position[1] - ay) * ny - radius
    return max(gap, 0.0) / -approach


def time_to_contact(p1, v1, p2, v2, radius):
    """Time until two discs of equal radius touch, or None when they never do."""
    dx, dy = p2[0] - p1[0], p2[1] - p1[1]
    dvx, dvy = v2[0] - v1[0], v2[1] - v1[1]
    closing = dx * dvx + dy * dvy
    if closing >= 0.0:
        return None
    speed2 = dvx * dvx + dvy * dvy
    excess = dx * dx + dy * dy - 4.0 * radius * radius
    if excess <= 0.0:
        return 0.0  # already touching and approaching: collide now
    disc = closing * closing - speed2 * excess
    if disc < 0.0:
        return None
    return max((-closing - math.sqrt(disc)) / speed2, 0.0)


def _next_event(pos, vel, walls, radius):
    """(time until the next collision, what collides) or (None, None) when nothing will."""
    soonest = None
    event = None
    count = len(pos)
    for i in range(count):
        for w, wall in enumerate(walls):
            dt = time_to_wall(pos[i], vel[i], wall, radius)
            if dt is not None and (soonest is None or dt < soonest):
                soonest, event = dt, ("wall", i, w)
        for j in range(i + 1, count):
            dt = time_to_contact(pos[i], vel[i], pos[j], vel[j], radius)
            if dt is not None and (soonest is None or dt < soonest):
                soonest, event = dt, ("ball", i, j)
    return soonest, event


def _bounce(pos, vel, walls, event):
    """Apply one collision's velocity change in place."""
    kind, i, k = event
    if kind == "wall":
        nx, ny = walls[k][1]
        along = vel[i][0] * nx + vel[i][1] * ny
        vel[i][0] -= 2.0 * along * nx
        vel[i][1] -= 2.0 * along * ny
        return
    dx, dy = pos[k][0] - pos[i][0], pos[k][1] - pos[i][1]
    dist = math.hypot(dx, dy) or 1.0
    nx, ny = dx / dist, dy / dist
    exchange = (vel[i][0] - vel[k][0]) * nx + (vel[i][1] - vel[k][1]) * ny
    vel[i][0] -= exchange * nx
    vel[i][1] -= exchange * ny
    vel[k][0] += exchange * nx
    vel[k][1] += exchange * ny


def trajectory(vertices, radius, positions, velocities, times):
    """Unrounded ball centres at each of the (ascending) times, from one pass over the events."""
    walls = inward_walls(vertices)
    pos = [[float(x), float(y)] for x, y in positions]
    vel = [[float(x), float(y)] for x, y in velocities]
    now = 0.0
    out = []
    for target in times:
        for _ in range(1000000):
            soonest, event = _next_event(pos, vel, walls, radius)
            step = target - now if soonest is None or now + soonest > target else soonest
            for p, v in zip(pos, vel):
                p[0] += v[0] * step
                p[1] += v[1] * step
            now += step
            if event is None or now >= target:
                break
            _bounce(pos, vel, walls, event)
        out.append([[x, y] for x, y in pos])
    return out


def simulate(vertices, radius, positions, velocities, t):
    """Positions of every ball at time t, rounded to two decimals."""
    final = trajectory(vertices, radius, positions, velocities, [t])[0]
    return [[round(x, 2), round(y, 2)] for x, y in final]
