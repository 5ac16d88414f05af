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

    from resd.files import _process_start

    target = tmp_path / "latest"
    parent = os.getppid()  # a running process (the one that started us)
    live = tmp_path / f".latest.tmp{parent}-{_process_start(parent)}"
    live.mkdir()
    leftovers = [tmp_path / ".latest.tmp999999999-5",  # no such process
                 tmp_path / ".latest.tmp1",  # pid 1 runs, but a name without a start time is no writer's
                 tmp_path / f".latest.tmp{parent}-1",  # that pid, but a process that started earlier
                 tmp_path / ".latest.tmpjunk"]
    for path in leftovers:
        path.mkdir()
    (tmp_path / ".latest.tmp2-2").write_text("a file under a writer's name")
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / ".latest.tmp3-3").symlink_to(outside)
    with replace_dir_atomic(target) as tmp:
        (tmp / "state.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["latest", "outside", live.name])


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
