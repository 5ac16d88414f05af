"""resd: Reflection-Enhanced Self-Distillation and the methods it builds on, on one engine.

Layers (each imports only from the layers below it):
    cli -> train -> report -> context / eval -> distill / envs -> models
"""

__version__ = "0.1.0"
