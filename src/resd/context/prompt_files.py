"""Editable prompt template files: lookup by built-in name or path, parts, and slot filling.

A template file is plain text split into named parts by header lines `=== name ===`; anything
before the first header is a comment for the person editing the file. Placeholders are
`{name}`; only names the caller supplies are replaced, so other braces (JSON, code) need no
escaping.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from pathlib import Path

from resd.errors import UserError

_HEADER = re.compile(r"^===\s*([A-Za-z0-9_\-]+)\s*===\s*$")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def builtin_names() -> list[str]:
    """Names of the template files shipped in resd/context/templates/ (without .txt)."""
    folder = resources.files("resd.context") / "templates"
    return sorted(p.name[:-4] for p in folder.iterdir() if p.name.endswith(".txt"))


def read_template(name_or_path: str) -> str:
    """The text of a built-in template (by name) or of a user's file (by path)."""
    return _read_cached(name_or_path, _mtime(name_or_path))


def _mtime(name_or_path: str) -> float:
    p = Path(name_or_path)
    return p.stat().st_mtime if p.is_file() else 0.0


@lru_cache(maxsize=64)
def _read_cached(name_or_path: str, _mtime_key: float) -> str:
    # The mtime is part of the key so that editing a user template during a session is seen.
    p = Path(name_or_path)
    if p.is_file():
        return p.read_text(encoding="utf-8")
    shipped = resources.files("resd.context") / "templates" / f"{name_or_path}.txt"
    if shipped.is_file():
        return shipped.read_text(encoding="utf-8")
    raise UserError(f"unknown prompt template {name_or_path!r}: give a built-in name "
                    f"({', '.join(builtin_names())}) or the path of a .txt file")


def split_parts(text: str, *, source: str = "template") -> dict[str, str]:
    """Map part name -> text (without its header line; surrounding blank lines trimmed)."""
    parts: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        m = _HEADER.match(line.strip())
        if m:
            current = m.group(1).lower()
            if current in parts:
                raise UserError(f"{source}: part '=== {current} ===' appears twice")
            parts[current] = []
        elif current is not None:
            parts[current].append(line)
    if not parts:
        raise UserError(f"{source}: no '=== part ===' header found (see the built-in templates "
                        f"in resd/context/templates/ for the format)")
    return {k: "\n".join(v).strip("\n") for k, v in parts.items()}


def load_parts(name_or_path: str, required: tuple[str, ...]) -> dict[str, str]:
    parts = split_parts(read_template(name_or_path), source=f"template {name_or_path!r}")
    missing = [r for r in required if r not in parts]
    if missing:
        raise UserError(f"template {name_or_path!r} lacks part(s) {', '.join(missing)}; "
                        f"add a line '=== {missing[0]} ===' followed by its text")
    return parts


def placeholders(text: str) -> set[str]:
    return set(_PLACEHOLDER.findall(text))


def fill(text: str, values: dict[str, str]) -> str:
    """Replace `{name}` for every name in `values`; leave every other brace untouched."""
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)] if m.group(1) in values else m.group(0), text)


def fill_dropping_empty(text: str, values: dict[str, str]) -> str:
    """Like `fill`, but a line holding only an empty placeholder disappears, with the blank
    lines right after it, so switched-off slots leave no gaps in the prompt."""
    empty = {name for name, v in values.items() if not v}
    out: list[str] = []
    skipping_blanks = False
    for line in text.split("\n"):
        m = _PLACEHOLDER.fullmatch(line.strip())
        if m and m.group(1) in empty:
            skipping_blanks = True
            continue
        if skipping_blanks and not line.strip():
            continue
        skipping_blanks = False
        out.append(line)
    return fill("\n".join(out), values).strip("\n")
