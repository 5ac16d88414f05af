"""Name -> Environment class. Built-ins register lazily; users register with one decorator."""

from __future__ import annotations

import importlib
from typing import Any, Callable, TypeVar

from resd.envs.base import Environment
from resd.errors import UserError

E = TypeVar("E", bound=type[Environment])

_REGISTRY: dict[str, type[Environment]] = {}

# Built-in environments: name -> "module:Class", imported on first use so that
# `import resd.envs` stays cheap and an optional dependency only matters when used.
_BUILTINS: dict[str, str] = {
    "manufactoria-has": "resd.envs.manufactoria.env:ManufactoriaHas",
    "bouncingsim-easy": "resd.envs.bouncingsim:BouncingSimEasy",
    "bouncingsim-medium": "resd.envs.bouncingsim:BouncingSimMedium",
    "finer": "resd.envs.finer:FiNER",
    "code": "resd.envs.code:CodeEnv",
    "constraints": "resd.envs.constraints:ConstraintsEnv",
}


def register(name: str | None = None) -> Callable[[E], E]:
    """Class decorator: `@resd.envs.register("my-task")` makes `resd.envs.get("my-task")` work."""

    def deco(cls: E) -> E:
        key = name or cls.name
        if not key:
            raise ValueError(f"{cls.__name__}: give register() a name or set the class attribute `name`")
        cls.name = key  # type: ignore[misc]
        _REGISTRY[key] = cls
        return cls

    return deco


def _import_class(spec: str) -> type[Environment]:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"cannot import environment module {module_name!r}: {exc}") from exc
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Environment)):
        raise UserError(f"{spec!r} is not an Environment subclass (expected 'module:Class')")
    return cls


def names() -> list[str]:
    """Every registered environment name, built-ins first."""
    return list(dict.fromkeys([*_BUILTINS, *_REGISTRY]))


def get_class(name: str) -> type[Environment]:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _BUILTINS:
        cls = _import_class(_BUILTINS[name])
        _REGISTRY.setdefault(name, cls)
        return cls
    if ":" in name:
        return _import_class(name)
    raise UserError(f"unknown environment {name!r}; available: {', '.join(names())} "
                    f"(or 'module:Class' for your own)")


def get(name: str, **options: Any) -> Environment:
    """Build an environment by registered name or 'module:Class', passing options to it."""
    cls = get_class(name)
    try:
        return cls(**options)
    except TypeError as exc:
        raise UserError(f"bad options for environment {name!r}: {exc}") from exc
