"""Shared test fixtures: the toy `letters` environment (tests/toyenv.py), registered for in-process
runs and importable by runs started in a subprocess."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import resd.envs as envs
from toyenv import LetterEnv

TESTS = Path(__file__).parent

if "letters" not in envs.names():
    envs.register("letters")(LetterEnv)


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment variables for a `resd` subprocess that can import `toyenv:LetterEnv`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{TESTS}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")  # runs side by side: avoid thread oversubscription
    return env
