"""Manufactoria-Has: build a factory (a small automaton program) that accepts tapes with a property.

`run(program, tape)` executes one robot; `ManufactoriaHas` (in `env.py`) is the environment.
"""

from resd.envs.manufactoria.dsl import MAX_STEPS, ParseError, Program, RunResult, execute, parse, run

__all__ = ["MAX_STEPS", "ParseError", "Program", "RunResult", "execute", "parse", "run"]
