"""resd.envs.records.load_records: one reader for task records from the hub or a local export,
tested on small files made here (JSON Lines, JSON, Parquet, folders of them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from resd.envs.records import load_records
from resd.errors import UserError

ROWS = [
    {"id": "a", "ground_truth": [{"input": "R", "expected_accepted": True}], "name": "first"},
    {"id": "b", "ground_truth": [{"input": "", "expected_accepted": False}], "name": "second"},
    {"id": "c", "ground_truth": [{"input": "GB", "expected_accepted": True}], "name": "third"},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_a_jsonl_file_gives_its_records_in_order(tmp_path):
    records = load_records("file", path=write_jsonl(tmp_path / "has.jsonl", ROWS))
    assert records == ROWS


def test_a_json_array_file_reads_like_json_lines(tmp_path):
    path = tmp_path / "has.json"
    path.write_text(json.dumps(ROWS), encoding="utf-8")
    assert load_records("file", path=str(path)) == ROWS


def test_a_parquet_file_gives_the_same_records(tmp_path):
    records = load_records("file", path=write_parquet(tmp_path / "has.parquet", ROWS))
    assert [r["id"] for r in records] == ["a", "b", "c"]
    assert records[2]["ground_truth"] == [{"input": "GB", "expected_accepted": True}]


def test_a_folder_reads_every_record_file_in_name_order_nested_too(tmp_path):
    (tmp_path / "part").mkdir()
    write_jsonl(tmp_path / "b.jsonl", ROWS[1:2])
    write_jsonl(tmp_path / "a.jsonl", ROWS[:1])
    write_jsonl(tmp_path / "part" / "c.jsonl", ROWS[2:])
    (tmp_path / "README.md").write_text("not records")  # other files are not read
    assert [r["id"] for r in load_records("file", path=tmp_path)] == ["a", "b", "c"]


def test_a_folder_of_parquet_shards(tmp_path):
    write_parquet(tmp_path / "train-00000.parquet", ROWS[:2])
    write_parquet(tmp_path / "train-00001.parquet", ROWS[2:])
    assert [r["name"] for r in load_records("file", path=tmp_path)] == ["first", "second", "third"]


@pytest.mark.parametrize("setup, message", [
    (lambda d: d / "missing.jsonl", "dataset path not found"),
    (lambda d: d, "no .jsonl, .json or .parquet files"),
])
def test_missing_or_empty_paths_are_one_line_errors(tmp_path, setup, message):
    with pytest.raises(UserError, match=message):
        load_records("file", path=setup(tmp_path))


def test_mixed_formats_in_one_folder_are_refused(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", ROWS[:1])
    write_parquet(tmp_path / "b.parquet", ROWS[1:])
    with pytest.raises(UserError, match="must all be .jsonl/.json or all .parquet"):
        load_records("file", path=tmp_path)


def test_a_file_with_another_suffix_is_refused(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("id\na\n")
    with pytest.raises(UserError, match=r"got \.csv"):
        load_records("file", path=path)


def test_malformed_json_names_the_path_not_a_traceback(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a"}\n{"id": \n')
    with pytest.raises(UserError, match=f"could not read records from {path}"):
        load_records("file", path=path)


def test_bad_arguments_are_user_errors():
    with pytest.raises(UserError, match="must be 'hf' or 'file'"):
        load_records("generated")
    with pytest.raises(UserError, match="source: file needs `path:`"):
        load_records("file")
    with pytest.raises(UserError, match="source: hf needs `dataset: owner/name`"):
        load_records("hf")


def test_the_hub_offline_is_one_line_naming_the_local_alternative(tmp_path):
    # In a child process: the hub's offline switch is read when `datasets` is first imported.
    code = ("from resd.envs.records import load_records\nfrom resd.errors import UserError\n"
            "try:\n    load_records('hf', dataset='manufactoria/has_test')\n"
            "except UserError as e:\n    print('USERERROR', e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "USERERROR could not load manufactoria/has_test[train] from the Hugging Face hub" in out.stdout, \
        out.stderr[-2000:]
    assert "use source: file with path:" in out.stdout and "\n" not in out.stdout.strip()
