"""Training-health warnings (resd.train.health): each condition warns once after `patience`
updates, clears, and survives a checkpoint round trip."""

from __future__ import annotations

from resd.train.health import HealthMonitor


def record(**values):
    base = {"loss_tokens": 10, "signal_fraction": 0.5, "grad_norm": 1.0, "health/entropy": 2.0,
            "health/teacher_advantage": 0.1}
    return {**base, **values}


def test_a_healthy_run_raises_nothing():
    monitor = HealthMonitor()
    assert not any(monitor.observe(record()) for _ in range(10))


def test_each_condition_warns_once_after_patience_updates():
    cases = {"learning signal": dict(loss_tokens=0, signal_fraction=0.0, success_rate=0.0),
             "every rollout succeeded": dict(loss_tokens=0, signal_fraction=0.0, success_rate=1.0),
             "gradient norm": dict(grad_norm=1e-5),
             "entropy": dict(**{"health/entropy": 0.05}),
             "teacher did not prefer": dict(**{"health/teacher_advantage": -0.2})}
    for needle, bad in cases.items():
        monitor = HealthMonitor(patience=3)
        monitor.observe(record())  # the first update sets the reference values
        lines = [monitor.observe(record(**bad)) for _ in range(5)]
        assert [len(x) for x in lines] == [0, 0, 1, 0, 0], needle
        assert needle in lines[2][0]


def test_a_cleared_condition_can_warn_again_and_state_round_trips():
    monitor = HealthMonitor(patience=2)
    monitor.observe(record())
    bad = record(**{"health/teacher_advantage": 0.0})
    assert [len(monitor.observe(bad)) for _ in range(2)] == [0, 1]
    assert monitor.observe(record()) == []
    copy = HealthMonitor.from_state_dict(monitor.state_dict())
    assert [len(copy.observe(bad)) for _ in range(2)] == [0, 1]
    assert copy.state_dict() != HealthMonitor().state_dict()


def test_entropy_rising_under_distillation_warns_once_with_both_means():
    monitor = HealthMonitor(patience=2, window=3, rise=0.15)
    for _ in range(3):
        assert monitor.observe(record(**{"health/entropy": 2.0})) == []
    # the latest 3 updates' mean must pass 2.3: (2.0, 2.0, 2.8) 2.27 does not, (2.0, 2.8, 2.9) 2.57 does
    lines = [monitor.observe(record(**{"health/entropy": e})) for e in (2.0, 2.0, 2.8, 2.9, 2.9, 2.9)]
    assert [len(x) for x in lines] == [0, 0, 0, 0, 1, 0]
    assert "rose from 2.00 to 2.87 nats/token (mean of 3 updates)" in lines[4][0]
    assert "distillation_teacher_temperature" in lines[4][0]


def test_entropy_rising_needs_a_teacher():
    """GRPO's entropy moves too, but no teacher spread it: no warning."""
    monitor = HealthMonitor(patience=1, window=2)
    grpo = {"loss_tokens": 10, "signal_fraction": 1.0, "grad_norm": 1.0}
    assert not any(monitor.observe({**grpo, "health/entropy": e}) for e in (1.0, 1.0, 3.0, 3.0, 3.0))
