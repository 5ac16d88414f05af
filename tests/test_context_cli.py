"""`resd playbook show` and the in-context loop behind `resd icl`."""

from __future__ import annotations

import json
from typing import ClassVar

import pytest

from resd.cli import main
from resd.context import ContextConfig, ContextUpdater, Playbook
from resd.experiments.icl import grow_playbook, with_playbook
from resd.envs.base import Environment, Outcome, Task


def saved_playbook(tmp_path):
    book = Playbook()
    a = book.add("Declare every node you branch to.", section="rules", step=1)
    book.tag(a, "helpful", 3)
    book.add("Reject when the tape is empty.", section="mistakes", step=2)
    path = tmp_path / "playbook.json"
    book.save(path)
    return path


def test_show_prints_sections_counts_and_ages(tmp_path, capsys):
    path = saved_playbook(tmp_path)
    assert main(["playbook", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 entries in 2 sections (helpful 1, harmful 0, unused 1); step 3" in out
    row = next(line for line in out.splitlines() if "rule-00001" in line)
    assert [c.strip() for c in row.strip("│ ").split("│")][:7] == ["rule-00001", "rules", "1", "0", "1", "3", "2"]
    assert "Reject when the tape is empty." in out
    assert main(["playbook", "show", str(path), "--section", "mistakes"]) == 0
    assert "rule-00001" not in capsys.readouterr().out


def test_show_reads_run_directories_and_updater_states(tmp_path, capsys):
    updater = ContextUpdater(ContextConfig(playbook_scope="per_example"), lambda p, n, t: [""] * len(p))
    updater.playbook("task-7").add("Put the program in one code block.", step=4)
    run_dir = tmp_path / "run"
    (run_dir / "playbooks").mkdir(parents=True)
    (run_dir / "playbooks" / "step_000001.json").write_text(json.dumps({"playbook": {"entries": []}}))
    (run_dir / "playbooks" / "step_000005.json").write_text(json.dumps(updater.state_dict()))
    assert main(["playbook", "show", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "step_000005.json" in out and "example task-7: 1 entries" in out and "step 5" in out
    assert main(["playbook", "show", str(run_dir), "--example", "nope"]) == 2


def test_show_errors_are_one_line_user_errors(tmp_path, capsys):
    assert main(["playbook", "show", str(tmp_path / "missing.json")]) == 2
    (tmp_path / "bad.json").write_text("[1, 2]")
    assert main(["playbook", "show", str(tmp_path / "bad.json")]) == 2
    assert main(["playbook", "show", str(tmp_path)]) == 2  # a directory without snapshots
    err = capsys.readouterr().err
    assert err.count("resd: error:") == 3 and "Traceback" not in err


def test_with_playbook_appends_to_the_last_user_turn_only_when_non_empty():
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Do X."}]
    assert with_playbook(messages, "") == messages
    out = with_playbook(messages, "## rules\n[rule-00001] (helpful 0, harmful 0) Be careful.")
    assert out[0] == messages[0]
    assert out[1]["content"].startswith("Do X.\n\n") and "Be careful." in out[1]["content"]


class SayYes(Environment):
    """A toy task made in code: the answer must contain 'yes'."""

    name: ClassVar[str] = "say-yes"

    def tasks(self, split):
        return [Task(id=f"{split}-{i}", prompt=[{"role": "user", "content": f"Question {i}: say yes."}])
                for i in range(5 if split == "train" else 2)]

    def score(self, task, completion):
        ok = "yes" in completion.lower()
        return Outcome(reward=float(ok), acc=float(ok), feedback="" if ok else "The answer lacks the word yes.",
                       passed=[ok])


def test_icl_loop_grows_a_playbook_with_a_real_student():
    from resd.models import tiny_model

    model, tokenizer = tiny_model(seed=0)
    lessons = iter(["Answer with the single word yes.", "Never answer with random symbols.",
                    "Read the question before answering it."] * 3)
    reflector_calls = []

    def reflector(prompts, max_new_tokens, temperature):  # stands in for the student as reflector
        reflector_calls.append(len(prompts))
        return [f"ADD rules: {next(lessons)}" if "WHAT WENT WRONG" in p[-1]["content"]
                else "DIAGNOSIS: The answer never says yes.\nTAGS: NONE" for p in prompts]

    records = []
    updater = grow_playbook(SayYes(), model, tokenizer, context=ContextConfig(success_tagging=False),
                      batch_size=2, max_new_tokens=4, seed=0, progress=False,
                      on_batch=lambda r, u: records.append(r), context_generate=reflector)
    assert [r["step"] for r in records] == [1, 2, 3] and records[-1]["rollouts"] == 5
    assert all(r["success_rate"] == 0 for r in records)  # a random model never says "yes"
    assert reflector_calls == [2, 2, 2, 2, 1, 1]  # one call per phase per batch
    assert len(updater.playbook()) >= 2
    assert "Answer with the single word yes." in with_playbook(SayYes().tasks("test")[0].prompt,
                                                               updater.playbook_text("test-0"))[-1]["content"]


@pytest.mark.slow
def test_icl_command_on_manufactoria_with_the_default_model(tmp_path, capsys):
    out = tmp_path / "icl"
    assert main(["icl", "--env", "manufactoria-has", "--limit-train", "2", "--limit", "1", "--k", "1",
                 "--batch-size", "2", "--max-new-tokens", "16", "--reflection-max-new-tokens", "16",
                 "--curation-max-new-tokens", "16", "--out", str(out)]) == 0
    results = json.loads((out / "eval.json").read_text())
    assert results["env"] == "manufactoria-has" and results["model"] == "smollm2-135m"
    assert results["with_playbook"]["n_tasks"] == 1 and results["with_playbook"]["k"] == 1
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert record["rollouts"] == 2 and "context/parse_failures" in record
    assert (out / "playbooks" / "step_000001.json").is_file()
    assert main(["playbook", "show", str(out)]) == 0
