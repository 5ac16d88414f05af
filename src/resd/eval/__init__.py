"""Evaluation: mean@k / best@k metrics and checkpoint selection (pure), sampling + scoring a split."""

from resd.eval.scoring import score_rollouts

__all__ = ["score_rollouts"]
