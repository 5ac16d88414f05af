"""Task records from the Hugging Face hub or from local files, one loader for every environment.

The paper's Manufactoria and BouncingSim problems are published as hub datasets. A run that names
one (`source: hf`, `dataset: owner/name`) reads it through `datasets.load_dataset`; an offline
machine reads the same records from a local file or folder (`source: file`, `path: ...`): JSON
Lines, JSON or Parquet, the format an export of the hub dataset has. Each environment turns a
record (a plain dict) into its `Task`; resd's own generators write records of the same schema, so
one conversion serves all three sources.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from resd.errors import UserError

SOURCES = ("generated", "hf", "file")
"""Where an environment's tasks come from: resd's own generator, the hub, or a local export."""

_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def _data_files(path: Path) -> tuple[str, list[str]]:
    """The `datasets` builder name and the data files of one file, or of every record file in a folder."""
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _FORMATS)
    else:
        raise UserError(f"dataset path not found: {path}")
    if not files:
        raise UserError(f"no .jsonl, .json or .parquet files in {path}")
    kinds = {_FORMATS.get(p.suffix) for p in files}
    if None in kinds or len(kinds) != 1:
        raise UserError(f"{path}: record files must all be .jsonl/.json or all .parquet, got "
                        f"{', '.join(sorted({p.suffix or '(none)' for p in files}))}")
    return kinds.pop(), [str(p) for p in files]


def load_records(source: str, *, dataset: str | None = None, path: str | Path | None = None,
                 split: str = "train") -> list[dict[str, Any]]:
    """Every record of one split, as dicts in the stored order.

    source="hf":   `datasets.load_dataset(dataset, split=split)` (needs the hub, or its cache).
    source="file": the file or folder at `path` (its records are the split; pass one path per split).
    """
    try:
        import datasets
    except ImportError as exc:  # a dependency of resd; only a broken install lands here
        raise UserError("the `datasets` package is needed to read task records: pip install datasets") from exc
    if source == "hf":
        if not dataset:
            raise UserError("source: hf needs `dataset: owner/name`")
        try:
            data = datasets.load_dataset(dataset, split=split)
        except Exception as exc:  # offline, unknown id, hub errors: one line, the fix named
            first = (str(exc).splitlines() or [""])[0][:200]
            raise UserError(f"could not load {dataset}[{split}] from the Hugging Face hub ({type(exc).__name__}: "
                            f"{first}). Offline, export it and use source: file with path: ...") from exc
    elif source == "file":
        if path is None:
            raise UserError("source: file needs `path:` (a .jsonl/.json/.parquet file or a folder of them)")
        builder, files = _data_files(Path(path))
        try:
            data = datasets.load_dataset(builder, data_files=files, split="train")
        except Exception as exc:  # malformed JSON, mixed schemas: name the file, not a traceback
            first = (str(exc).splitlines() or [""])[0][:200]
            raise UserError(f"could not read records from {path} ({type(exc).__name__}: {first})") from exc
    else:
        raise UserError(f"record source must be 'hf' or 'file', got {source!r}")
    return [dict(row) for row in data]
