"""FiNER: ACE-format files in, position-wise tag scoring and feedback out.

Most tests build small ACE-format files in code; the real 500-record test set is read from
../shared/data/finer/ (relative to the repository root) when that folder exists."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from resd.envs import get
from resd.envs.finer import (FiNER, batch_finer139, extract_answer, judge_tags, remove_thinking, score_answer,
                             split_context)
from resd.envs.text import MAX_COMPLETION_CHARS
from resd.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "finer"
OPTIONS = ["Revenues", "InterestExpense", "LineOfCredit", "ConcentrationRiskPercentage1", "DebtInstrumentTerm"]


def _context(entities: list[tuple[str, str]]) -> str:
    questions = "\n".join(f'{i + 1}. What is best tag for entity "{e}" in sentence: "{s}?"'
                          for i, (e, s) in enumerate(entities))
    return (f"You are XBRL expert.  Here is a list of US GAAP tags options: ,{','.join(OPTIONS)}. Answer the "
            f"following {len(entities)} independent questions.\n{questions}\nOutput US GAAP tags:")


def _write(path: Path, n: int, offset: int = 0) -> Path:
    rows = []
    for k in range(offset, offset + n):
        ents = [(str(100 + 4 * k + j), f"Sentence {k}-{j} mentions {100 + 4 * k + j} dollars") for j in range(4)]
        rows.append({"context": _context(ents), "target": ",".join(OPTIONS[(k + j) % len(OPTIONS)] for j in range(4))})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def data_dir(tmp_path):
    _write(tmp_path / "finer_train_batched_1000_samples.jsonl", 6)
    _write(tmp_path / "finer_val_batched_500_samples.jsonl", 5, offset=100)
    return tmp_path


# --- answer parsing and scoring (pure) ----------------------------------------------------------

def test_answer_is_the_last_tag_pair_outside_thinking():
    # Facts of the RESD task's answer reader (checked against it, docs/environments.md).
    assert extract_answer("<think>maybe <answer>A,B</answer></think>so <answer>C,D</answer>") == "C,D"
    assert extract_answer("<answer>A</answer> then <answer>B</answer>") == "B"
    assert extract_answer("<think>only thinking <answer>A</answer></think>") is None
    assert extract_answer("cut-off thinking</think><answer>X</answer>") == "X"
    assert extract_answer("no tags at all") is None
    # An unclosed <think> is not special: an answer after it still counts.
    assert extract_answer("<think>I think <answer>A</answer>") == "A"
    # Upper-case tags are not tags: neither answers nor thinking.
    assert extract_answer("<ANSWER>A</ANSWER>") is None and extract_answer("<Answer>A</Answer>") is None
    assert extract_answer("<THINK><answer>A</answer></THINK>") == "A"
    # Each opening pairs with the next closing; the answer is trimmed, never cleaned up.
    assert extract_answer("<answer><answer>A</answer>") == "<answer>A"
    assert extract_answer("<answer> [A, B] </answer>") == "[A, B]"
    assert extract_answer("<answer>A") is None and extract_answer("<answer></answer>") == ""
    # Complete blocks go first, then everything before a remaining </think>.
    assert remove_thinking("<think>a<think>b</think>c</think>  d") == "d"
    assert remove_thinking("x</think> y</think>z") == "y</think>z"


def test_tags_match_position_wise_case_insensitively_and_nothing_else():
    gold = ["Revenues", "InterestExpense", "LineOfCredit", "Revenues"]
    assert judge_tags(["revenues", " INTERESTEXPENSE", "LineOfCredit\t", "Revenues"], gold) == [True] * 4
    assert judge_tags(["InterestExpense", "Revenues", "LineOfCredit", "Revenues"], gold) == [False, False, True, True]
    assert judge_tags(["Revenues"], gold) == [True, False, False, False]  # missing positions are wrong
    assert judge_tags(gold + ["Extra"], gold) == [True] * 4  # extra ones are ignored
    # Quotes and brackets are part of the tag, as in the task's reward.
    assert judge_tags(['"Revenues"', "[InterestExpense", "LineOfCredit.", "Revenues"], gold) == [False, False, False, True]


def test_binary_reward_by_default_fraction_on_request_and_the_tasks_feedback():
    gold = ["Revenues", "InterestExpense", "LineOfCredit", "Revenues"]
    completion = "<answer>Revenues,Revenues,LineOfCredit,NotATag</answer>"
    binary = score_answer(completion, gold)
    assert (binary.reward, binary.acc, binary.passed) == (0.0, 0.5, [True, False, True, False])
    assert binary.feedback == "Your answer is partially wrong. The correct answer is Revenues,InterestExpense,LineOfCredit,Revenues."
    fraction = score_answer(completion, gold, reward_mode="fraction")
    assert fraction.reward == 0.5  # the released run scripts' partial credit
    hidden = score_answer(completion, gold, reveal_gold=False)
    assert hidden.feedback == "Your answer is partially wrong."
    none_right = score_answer("<answer>A,B,C,D</answer>", gold)
    assert none_right.feedback.startswith("Your answer is completely wrong.") and none_right.acc == 0.0
    empty = score_answer("<answer></answer>", gold)  # an empty answer is a wrong answer, not a format error
    assert empty.feedback.startswith("Your answer is completely wrong.") and "error" not in empty.details
    right = score_answer("<answer>revenues, interestexpense, lineofcredit, REVENUES</answer>", gold)
    assert right.reward == 1.0 and right.solved and right.feedback == ""


@pytest.mark.parametrize("completion", ["Revenues,InterestExpense,LineOfCredit,Revenues", "<answer>Revenues",
                                        "<think><answer>Revenues</answer></think>", "<ANSWER>Revenues</ANSWER>"])
def test_format_errors_get_zero_and_say_how_to_answer(completion):
    out = score_answer(completion, ["Revenues"] * 4)
    assert out.reward == 0.0 and out.acc == 0.0 and out.details["error"] == "format"
    assert "<answer>your_answer</answer>" in out.feedback


def test_repeated_unclosed_tags_are_read_in_linear_time():
    # A regex that retries each unclosed <answer> scans to the end every time: 100k characters
    # took 9 s. Just under the cap, in every shape that made it quadratic, this must stay instant.
    gold = ["Revenues"] * 4
    size = MAX_COMPLETION_CHARS - 100
    attacks = ["<answer>" * (size // 8), "<think>" * (size // 7), "<think>" * (size // 14) + "<answer>" * (size // 16),
               "</think>" * (size // 8), ("<answer>x" * (size // 9)) + "<answer>Revenues,Revenues,Revenues,Revenues</answer>"]
    started = time.perf_counter()
    outcomes = [score_answer(attack, gold) for attack in attacks]
    assert time.perf_counter() - started < 2.0
    assert [o.reward for o in outcomes] == [0.0] * 5
    assert [o.details.get("error") for o in outcomes] == ["format", "format", "format", "format", None]
    # The first opening pairs with the only closing: the whole run is one (wrong) answer.
    answer = extract_answer(attacks[-1])
    assert answer.startswith("x<answer>x") and answer.endswith("<answer>Revenues,Revenues,Revenues,Revenues")


def test_completions_over_the_cap_are_refused_unread():
    gold = ["Revenues"] * 4
    padded = "x" * MAX_COMPLETION_CHARS + "<answer>Revenues,Revenues,Revenues,Revenues</answer>"
    out = score_answer(padded, gold)
    assert out.reward == 0.0 and out.details["error"] == "format" and "was not read" in out.feedback


def test_instruction_input_records_split_into_context_and_question():
    assert split_context("Instruction: Tag it.\nInput: Revenue was 5.\nAnswer: ") == ("Revenue was 5.", "Tag it.")
    assert split_context("You are XBRL expert. 1. What ...") == ("", "You are XBRL expert. 1. What ...")


# --- files ------------------------------------------------------------------------------------

def test_reads_ace_files_with_stable_ids_and_our_prompt(data_dir):
    env = get("finer", data_dir=str(data_dir))
    assert env.sizes() == {"train": 6, "test": 5}
    train, test = env.tasks("train"), env.tasks("test")
    assert [t.id for t in test] == [f"finer-test-{i:04d}" for i in range(5)]
    assert train[0].id == "finer-train-0000"
    task = test[0]
    assert task.meta["target"] == ["Revenues", "InterestExpense", "LineOfCredit", "ConcentrationRiskPercentage1"]
    assert task.meta["entities"] == ["500", "501", "502", "503"]
    # The task's prompt shape: an (empty, for FiNER batches) context, the record as the question,
    # then the answer format.
    text = task.prompt_text
    assert "### Context:\n\n\n### Question:\nYou are XBRL expert." in text
    assert text.rstrip().endswith("for example <answer>TagOne,TagTwo,TagThree,TagFour</answer>.")
    assert env.score(task, env.reference_solution(task)).reward == 1.0


def test_explicit_paths_and_env_var(tmp_path, monkeypatch):
    train = _write(tmp_path / "mine_train.jsonl", 2)
    test = _write(tmp_path / "mine_test.jsonl", 3)
    env = FiNER(train_path=str(train), test_path=str(test), data_dir="/nonexistent")
    assert env.sizes() == {"train": 2, "test": 3}
    monkeypatch.setenv("RESD_FINER_DIR", str(tmp_path))
    (tmp_path / "finer_val_batched_500_samples.jsonl").write_text(test.read_text())
    assert FiNER().sizes()["test"] == 3


def test_missing_train_file_names_the_fixes(tmp_path):
    _write(tmp_path / "finer_val_batched_500_samples.jsonl", 10)
    env = FiNER(data_dir=str(tmp_path))
    assert len(env.tasks("test")) == 10
    with pytest.raises(UserError, match="train file not found.*carve_train=N"):
        env.tasks("train")
    assert env.sizes() == {"train": 0, "test": 10}  # listing environments must not fail


def test_carve_train_is_deterministic_and_disjoint(tmp_path):
    _write(tmp_path / "finer_val_batched_500_samples.jsonl", 10)
    a, b = FiNER(data_dir=str(tmp_path), carve_train=4), FiNER(data_dir=str(tmp_path), carve_train=4)
    assert [t.id for t in a.tasks("train")] == [t.id for t in b.tasks("train")]
    train_ids, test_ids = {t.id for t in a.tasks("train")}, {t.id for t in a.tasks("test")}
    assert len(train_ids) == 4 and len(test_ids) == 6 and train_ids.isdisjoint(test_ids)
    assert train_ids | test_ids == {f"finer-test-{i:04d}" for i in range(10)}
    with pytest.raises(UserError, match="leaves no test tasks"):
        FiNER(data_dir=str(tmp_path), carve_train=10).tasks("test")


def test_bad_files_and_options_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="test file not found"):
        FiNER(data_dir=str(tmp_path)).tasks("test")
    (tmp_path / "finer_val_batched_500_samples.jsonl").write_text('{"context": "x", "target": "A"}\nnot json\n')
    with pytest.raises(UserError, match=r"finer_val_batched_500_samples.jsonl:2: not a JSON line"):
        FiNER(data_dir=str(tmp_path)).tasks("test")
    (tmp_path / "finer_val_batched_500_samples.jsonl").write_text('{"question": "x"}\n')
    with pytest.raises(UserError, match="ACE FiNER format"):
        FiNER(data_dir=str(tmp_path)).tasks("test")
    with pytest.raises(UserError, match="reward_mode"):
        FiNER(reward_mode="partial")
    with pytest.raises(UserError, match="source"):
        FiNER(source="web")


def test_finer139_sentences_are_batched_four_entities_per_task():
    names = ["O", "B-Revenues", "I-Revenues", "B-LineOfCredit", "I-LineOfCredit"]
    rows = [
        {"tokens": ["Revenue", "was", "$", "5", "million", "."], "ner_tags": [0, 0, 0, 1, 0, 0]},
        {"tokens": ["A", "10", "20", "line", "and", "7", "."], "ner_tags": [0, 3, 4, 0, 0, 3, 0]},
        {"tokens": ["Sales", "of", "8", "and", "9"], "ner_tags": [0, 0, 1, 0, 1]},
    ]
    records = batch_finer139(rows, names)
    assert len(records) == 1  # 5 entities: one full batch of 4, the fifth is left over
    assert records[0]["target"] == "Revenues,LineOfCredit,LineOfCredit,Revenues"
    task_text = records[0]["context"]
    assert "tags: ,LineOfCredit,Revenues." in task_text
    assert 'entity "10 20" in sentence: "A 10 20 line and 7 ."' in task_text
    env = FiNER()
    from resd.envs.finer import batch_task

    task = batch_task(records[0], "finer-test-0000", "synthetic")
    assert task.meta["entities"] == ["5", "10 20", "7", "8"]
    assert env.score(task, "<answer>Revenues,LineOfCredit,LineOfCredit,Revenues</answer>").solved


# --- the real RESD test set (read from ../shared when present, never committed) -----------------

@pytest.mark.skipif(not (SHARED / "finer_val_batched_500_samples.jsonl").is_file(),
                    reason=f"FiNER data not found at {SHARED} (copy finer_val_batched_500_samples.jsonl there)")
def test_real_test_set_gold_scores_everything_and_shifted_answers_do_not():
    env = FiNER(data_dir=str(SHARED))
    tasks = env.tasks("test")
    assert len(tasks) == 500 and all(len(t.meta["target"]) == 4 == len(t.meta["entities"]) for t in tasks)
    assert all(t.prompt_text.count("### Question:\nYou are XBRL expert.") == 1 for t in tasks[:20])
    outcomes = [env.score(t, env.reference_solution(t)) for t in tasks]
    assert all(o.reward == 1.0 and o.acc == 1.0 for o in outcomes)
    # Rotating the four tags keeps their set but breaks positions: scored position by position.
    rotated = [env.score(t, "<answer>" + ",".join(t.meta["target"][1:] + t.meta["target"][:1]) + "</answer>")
               for t in tasks]
    assert sum(o.solved for o in rotated) < 500
    assert all(o.acc == sum(o.passed) / 4 for o in rotated)


@pytest.mark.slow
def test_hub_source_offline_is_a_clear_error():
    """source='hf' without network: one UserError naming the offline alternative (in a child
    process, because the hub's offline switch is read when `datasets` is first imported)."""
    import os
    import subprocess
    import sys

    code = ("from resd.envs import get\nfrom resd.errors import UserError\n"
            "try:\n    get('finer', source='hf').tasks('test')\nexcept UserError as e:\n    print('USERERROR', e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "USERERROR could not load nlpaueb/finer-139" in out.stdout, out.stderr[-2000:]
    assert "data_dir=" in out.stdout
