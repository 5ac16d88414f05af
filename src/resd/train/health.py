"""Training-health warnings: say plainly when a run stopped learning, instead of letting the loss
curve look normal (SDPO's users report runs whose gradient norm sat near 1e-5 for hundreds of steps,
or that collapsed, with no warning).

Each update's record (metrics.jsonl) is checked for six conditions; one that holds for `patience`
consecutive updates produces one warning line, and another only after it has cleared:

* all solved: every rollout succeeded, so nothing is left to learn on these prompts (GRPO's
  advantages are 0, self-distillation has no failure to correct): a good end, said so;
* no signal: otherwise no sample carried a learning signal (no distilled sample; for GRPO, every
  group had one reward, so every advantage was 0);
* vanishing gradient: the gradient norm fell under 1% of the run's first one (or under 1e-8);
* entropy collapse: the student's entropy on its own samples fell under 10% of the first value;
* entropy rising (self-distillation only): the mean entropy of the last `window` updates is more than
  `rise` above that of the first `window`. A teacher broader than its student spreads the student's
  mass even where it ranks the accepted answer higher. Replayed over the learning benchmark's
  self-distillation runs on the default model it warned on every run that ended below its base
  (SDPO: 2.7 -> 3.2 nats within 10 updates, success peaking then falling to 0) and on none of the
  sharpened-teacher runs, and the update probe's held-out entropy change was the step-0 number that
  best told gaining runs from the others (benchmarks/README.md);
* teacher disagrees: the teacher did not prefer what the environment accepted (teacher advantage
  <= 0, see `resd.policy.update.UpdateResult`): distillation may then pull towards the failures.
  Replayed over the learning benchmark's self-distillation runs it warned on 7 of 8, both runs
  that gained included, so its message points to the update probe.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

MESSAGES = {
    "all_solved": "every rollout succeeded for {n} updates: nothing is left to learn on these prompts "
                  "(the weights stop moving); stop here or give it harder tasks",
    "no_signal": "no sample carried a learning signal for {n} updates (no success in any group, or no "
                 "teacher that knew more than its student); the weights are not moving",
    "vanishing_gradient": "the gradient norm is under 1% of the first update's for {n} updates "
                          "({value:.2e}): the loss may look normal but nothing is learned",
    "entropy_collapse": "the student's entropy on its own samples fell under 10% of its first value for "
                        "{n} updates ({value:.3f} nats/token): the policy is collapsing",
    "entropy_rising": "the student's entropy on its own samples rose from {first:.2f} to {value:.2f} nats/token "
                      "(mean of {window} updates) for {n} updates: distillation is spreading its mass, as a "
                      "teacher broader than the student does; a sharper teacher "
                      "(distillation_teacher_temperature: 0.5) keeps the teacher's ranking without the spread",
    "teacher_disagrees": "the teacher did not prefer accepted over rejected answers for {n} updates "
                         "(teacher advantage {value:+.3f}): distillation may pull towards the failures; "
                         "check with `resd probe --update` (on the default model this alone did not tell "
                         "runs that learned from runs that did not; a rising entropy did)",
}


@dataclass
class HealthMonitor:
    """Consecutive-update counters of the six conditions; `state_dict` goes into checkpoints so a
    resumed run warns exactly as an uninterrupted one."""

    patience: int = 3
    window: int = 5
    """Updates averaged for `entropy_rising` (the first ones, and the latest ones)."""
    rise: float = 0.15
    """`entropy_rising` holds when the latest window's mean entropy exceeds the first's by this fraction."""
    entropy_first: list[float] = field(default_factory=list)
    entropy_recent: list[float] = field(default_factory=list)
    first: dict[str, float] = field(default_factory=dict)
    streak: dict[str, int] = field(default_factory=dict)
    warned: list[str] = field(default_factory=list)

    def observe(self, record: dict[str, Any]) -> list[str]:
        """Warning lines this update raises (usually none)."""
        values = {"grad_norm": record.get("grad_norm"), "entropy": record.get("health/entropy")}
        for key, value in values.items():
            if isinstance(value, (int, float)) and value > 0 and key not in self.first:
                self.first[key] = float(value)
        signal = record.get("loss_tokens", 0) > 0 and record.get("signal_fraction", 0) > 0
        grad, entropy = values["grad_norm"], values["entropy"]
        advantage = record.get("health/teacher_advantage")
        solved = record.get("success_rate", 0) >= 1
        distilled = signal and isinstance(advantage, (int, float))  # a teacher scored this update's tokens
        if distilled and isinstance(entropy, (int, float)):
            (self.entropy_first if len(self.entropy_first) < self.window else self.entropy_recent).append(float(entropy))
            del self.entropy_recent[:-self.window]
        first = sum(self.entropy_first) / len(self.entropy_first) if self.entropy_first else 0.0
        recent = sum(self.entropy_recent) / len(self.entropy_recent) if self.entropy_recent else 0.0
        holds = {
            "all_solved": (not signal and solved, None),
            "no_signal": (not signal and not solved, None),
            "vanishing_gradient": (signal and isinstance(grad, (int, float)) and "grad_norm" in self.first
                                   and grad < max(1e-8, 0.01 * self.first["grad_norm"]), grad),
            "entropy_collapse": (isinstance(entropy, (int, float)) and "entropy" in self.first
                                 and entropy < 0.1 * self.first["entropy"], entropy),
            "entropy_rising": (distilled and len(self.entropy_recent) == self.window and first > 0
                               and recent > (1 + self.rise) * first, recent),
            "teacher_disagrees": (distilled and advantage <= 0, advantage),
        }
        lines = []
        for name, (now, value) in holds.items():
            if not now:
                self.streak[name] = 0
                if name in self.warned:
                    self.warned.remove(name)
                continue
            self.streak[name] = self.streak.get(name, 0) + 1
            if self.streak[name] >= self.patience and name not in self.warned:
                self.warned.append(name)
                lines.append(MESSAGES[name].format(n=self.streak[name], value=value if value is not None else 0.0,
                                                   first=first, window=self.window))
        return lines

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any] | None) -> "HealthMonitor":
        return cls(**state) if state else cls()
