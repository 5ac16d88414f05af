"""resd: Reflection-Enhanced Self-Distillation and the methods it builds on, on one engine.

Layers (each imports only from the layers below it):
    cli -> train -> report -> context / eval -> distill / envs -> models
"""

import os

# OpenMP threads that spin while waiting make torch 3-20x slower whenever anything else shares
# the CPU (measured on 2 cores: batch-8 generation 3.2 -> 10.0 tok/s). PASSIVE waiting costs
# little on an idle machine. It only takes effect if set before torch is imported, hence here;
# a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
