"""Atomic writes (resd.files): a folder is the old one or the complete new one, leftovers of
dead writers are cleaned, and the previous copy survives until the new one is in place."""

from __future__ import annotations

import json

import pytest

from resd.files import old_copy, replace_dir_atomic, write_json_atomic
from resd.run.checkpoint import find_checkpoint


def test_a_failed_write_leaves_the_old_folder_untouched(tmp_path):
    target = tmp_path / "latest"
    with replace_dir_atomic(target) as tmp:
        (tmp / "state.json").write_text("1")
    with pytest.raises(RuntimeError):
        with replace_dir_atomic(target) as tmp:
            (tmp / "state.json").write_text("2")
            raise RuntimeError("killed mid-write")
    assert (target / "state.json").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest"]


def test_leftovers_of_dead_writers_are_cleaned_and_live_ones_kept(tmp_path):
    import os

    target = tmp_path / "latest"
    dead = tmp_path / ".latest.tmp999999999"  # no such process
    dead.mkdir()
    live = tmp_path / f".latest.tmp{os.getppid()}"  # a running process (the one that started us)
    live.mkdir()
    with replace_dir_atomic(target) as tmp:
        (tmp / "state.json").write_text("{}")
    assert not dead.exists() and live.exists()


def test_the_previous_copy_is_the_fallback_until_the_new_one_exists(tmp_path):
    target = tmp_path / "latest"
    with replace_dir_atomic(target) as tmp:
        (tmp / "state.json").write_text(json.dumps({"step": 1}))
    # A kill between moving `latest` aside and renaming the new copy in: only `.latest.old` is left.
    target.rename(old_copy(target))
    assert find_checkpoint(target) == old_copy(target)
    with replace_dir_atomic(target) as tmp:
        (tmp / "state.json").write_text(json.dumps({"step": 2}))
    assert json.loads((find_checkpoint(target) / "state.json").read_text()) == {"step": 2}
    assert not old_copy(target).exists()


def test_json_files_are_written_whole_with_nan_as_null(tmp_path):
    path = tmp_path / "a" / "x.json"
    write_json_atomic(path, {"v": float("nan"), "w": [1.0, float("inf")]})
    assert json.loads(path.read_text()) == {"v": None, "w": [1.0, None]}
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]
