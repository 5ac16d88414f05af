"""Tasks that return reward + text feedback (see `base.Environment`)."""

from resd.envs.base import FEEDBACK_LIMIT, Environment, Message, Outcome, Task, clip_feedback, score_guarded
from resd.envs.registry import get, get_class, names, register

__all__ = [
    "FEEDBACK_LIMIT", "Environment", "Message", "Outcome", "Task", "clip_feedback", "score_guarded",
    "get", "get_class", "names", "register",
]
