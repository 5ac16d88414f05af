"""`KEY=VALUE` command-line items with YAML-typed values, shared by `--env-opt` and config overrides."""

from __future__ import annotations

from typing import Any

from resd.errors import UserError


def parse_key_value(item: str, *, what: str, example: str, empty: Any = None,
                    form: str = "KEY=VALUE") -> tuple[str, Any]:
    """`"a=1"` -> `("a", 1)`. The value is read as YAML (`true`, `0.5`, `[x, y]`); an empty value
    gives `empty`. `what` names the item in errors (e.g. "--env-opt 'x'"), `example` shows the fix."""
    import yaml

    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"{what} must look like {form} (e.g. {example})")
    try:
        return key, (yaml.safe_load(raw) if raw.strip() else empty)
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{what}: the value is not valid YAML ({first})") from exc
