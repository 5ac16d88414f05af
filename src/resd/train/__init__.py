"""Training: `RESDConfig`, method presets, and `RESDTrainer` (the only layer that touches TRL)."""

from resd.train.config import LoraSettings, RESDConfig, load_config
from resd.train.methods import METHODS, method_defaults

__all__ = ["METHODS", "LoraSettings", "RESDConfig", "RESDTrainer", "load_config", "method_defaults"]


def __getattr__(name: str):
    # The trainer pulls in accelerate/transformers; import it only when asked for.
    if name == "RESDTrainer":
        from resd.train.trainer import RESDTrainer

        return RESDTrainer
    raise AttributeError(name)
