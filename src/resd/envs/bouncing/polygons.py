"""Exact event-driven motion of non-rotating regular polygons inside a convex polygon (pure `math`).

This module is the BouncingSim reference solution: `BouncingSim.reference_solution(task)` ships
this file's text verbatim, followed by a `predict_position(t)` that calls `simulate` with the
scene's numbers. So it must stay self-contained: standard library `math` only, no other imports,
no module-level state.

Model (the one the task states): no gravity, no friction, perfectly elastic contact between the
polygons themselves (not their circumcircles); objects never rotate; every object has the same
density, so its mass is its area.
- Object-wall: the object's first vertex to reach a wall line touches it; the velocity is
  mirrored about the wall, v' = v - 2 (v . n) n (the container does not move).
- Object-object: two translating convex polygons first touch when the intervals of their
  projections start to overlap on every separating axis (the edge normals of both); the axis
  that starts overlapping last is the contact normal n. An elastic impulse along n with the two
  masses reverses the normal part of the relative velocity.
Between contacts every object moves in a straight line, so the state jumps from one contact to
the next exactly (up to floating point) instead of integrating with a time step.
"""

import math


def regular_polygon(sides, radius):
    """Vertices around the centre, counter-clockwise, the first on +x."""
    step = 2 * math.pi / sides
    return [(radius * math.cos(i * step), radius * math.sin(i * step)) for i in range(sides)]


def edge_normals(vertices):
    """Outward unit normal of each edge of a counter-clockwise convex polygon."""
    normals = []
    count = len(vertices)
    for i in range(count):
        x1, y1 = vertices[i]
        x2, y2 = vertices[(i + 1) % count]
        length = math.hypot(x2 - x1, y2 - y1)
        normals.append(((y2 - y1) / length, -(x2 - x1) / length))
    return normals


def polygon_area(vertices):
    total = 0.0
    for i in range(len(vertices)):
        x1, y1 = vertices[i]
        x2, y2 = vertices[(i + 1) % len(vertices)]
        total += x1 * y2 - x2 * y1
    return abs(total) / 2.0


def projection(vertices, axis):
    values = [x * axis[0] + y * axis[1] for x, y in vertices]
    return min(values), max(values)


def time_to_wall(position, velocity, shape, wall_point, inward):
    """Time until the object's nearest vertex reaches the wall line, or None when moving away."""
    approach = velocity[0] * inward[0] + velocity[1] * inward[1]
    if approach >= 0.0:
        return None
    reach = min(x * inward[0] + y * inward[1] for x, y in shape)
    gap = (position[0] - wall_point[0]) * inward[0] + (position[1] - wall_point[1]) * inward[1] + reach
    return max(gap, 0.0) / -approach


def time_to_contact(pa, va, shape_a, axes_a, pb, vb, shape_b, axes_b):
    """(time, unit normal from a to b) of the first contact of two translating convex polygons,
    or None when they never touch (swept separating-axis test)."""
    rel = (vb[0] - va[0], vb[1] - va[1])
    enter, leave, normal = -math.inf, math.inf, None
    for axis in axes_a + axes_b:
        lo_a, hi_a = projection(shape_a, axis)
        lo_b, hi_b = projection(shape_b, axis)
        offset = (pb[0] - pa[0]) * axis[0] + (pb[1] - pa[1]) * axis[1]
        lo_b, hi_b = lo_b + offset, hi_b + offset
        speed = rel[0] * axis[0] + rel[1] * axis[1]
        if speed == 0.0:
            if hi_b < lo_a or hi_a < lo_b:
                return None
            continue
        # b's interval slides by `speed` per second; find when it overlaps a's.
        t1, t2 = (lo_a - hi_b) / speed, (hi_a - lo_b) / speed
        if t1 > t2:
            t1, t2 = t2, t1
        if t1 > enter:
            # b approaches a along +axis when its interval starts below a's (speed < 0 means from above).
            enter, normal = t1, (axis if speed < 0 else (-axis[0], -axis[1]))
        leave = min(leave, t2)
    if normal is None or enter >= leave or leave <= 1e-12:
        return None
    return max(enter, 0.0), normal


def _next_event(pos, vel, shapes, axes, walls):
    soonest, event = None, None
    count = len(pos)
    for i in range(count):
        for w, (point, inward) in enumerate(walls):
            dt = time_to_wall(pos[i], vel[i], shapes[i], point, inward)
            if dt is not None and (soonest is None or dt < soonest):
                soonest, event = dt, ("wall", i, w, inward)
        for j in range(i + 1, count):
            hit = time_to_contact(pos[i], vel[i], shapes[i], axes[i], pos[j], vel[j], shapes[j], axes[j])
            if hit is not None and (soonest is None or hit[0] < soonest):
                soonest, event = hit[0], ("pair", i, j, hit[1])
    return soonest, event


def _collide(vel, masses, event):
    kind, i, k, n = event
    if kind == "wall":
        along = vel[i][0] * n[0] + vel[i][1] * n[1]
        if along < 0.0:
            vel[i][0] -= 2.0 * along * n[0]
            vel[i][1] -= 2.0 * along * n[1]
        return
    closing = (vel[k][0] - vel[i][0]) * n[0] + (vel[k][1] - vel[i][1]) * n[1]
    if closing >= 0.0:
        return
    impulse = -2.0 * closing / (1.0 / masses[i] + 1.0 / masses[k])
    vel[i][0] -= impulse / masses[i] * n[0]
    vel[i][1] -= impulse / masses[i] * n[1]
    vel[k][0] += impulse / masses[k] * n[0]
    vel[k][1] += impulse / masses[k] * n[1]


def trajectory(container_sides, container_center, container_radius, object_radius, sides, positions,
               velocities, times):
    """Unrounded object centres at each of the ascending times, from one pass over the contacts."""
    corners = [(container_center[0] + x, container_center[1] + y)
               for x, y in regular_polygon(container_sides, container_radius)]
    walls = [(corners[i], (-nx, -ny)) for i, (nx, ny) in enumerate(edge_normals(corners))]
    shapes = [regular_polygon(s, object_radius) for s in sides]
    axes = [edge_normals(shape) for shape in shapes]
    masses = [polygon_area(shape) for shape in shapes]
    pos = [[float(x), float(y)] for x, y in positions]
    vel = [[float(x), float(y)] for x, y in velocities]
    now = 0.0
    out = []
    for target in times:
        for _ in range(100000):
            soonest, event = _next_event(pos, vel, shapes, axes, walls)
            step = target - now if soonest is None or now + soonest > target else soonest
            for p, v in zip(pos, vel):
                p[0] += v[0] * step
                p[1] += v[1] * step
            now += step
            if event is None or now >= target:
                break
            _collide(vel, masses, event)
        out.append([[x, y] for x, y in pos])
    return out


def simulate(container_sides, container_center, container_radius, object_radius, sides, positions,
             velocities, t):
    """Every object's centre at time t, rounded to two decimals."""
    final = trajectory(container_sides, container_center, container_radius, object_radius, sides,
                       positions, velocities, [t])[0]
    return [[round(x, 2) + 0.0, round(y, 2) + 0.0] for x, y in final]
