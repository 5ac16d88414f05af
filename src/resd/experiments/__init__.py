"""Experiments on top of the trainer: method comparisons (`resd compare`), test-time
self-distillation on one task (`resd solve`) and the discovery benchmark (`resd bench discovery`).

Modules are imported by the CLI only when their command runs.
"""
