"""Manufactoria-Has: generated data, the judge, feedback, data sources."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys

import pytest

import resd.envs
from resd.envs.base import FEEDBACK_LIMIT, Outcome
from resd.envs.manufactoria.env import ManufactoriaHas, problem_to_record
from resd.envs.manufactoria.generators import (
    COLOURS,
    FAMILY_SIZES,
    MAX_CASES,
    MAX_COUNT_TOTAL,
    Criterion,
    count_requirement_sets,
    criterion_from_sentence,
    generate_problems,
    generated_splits,
    matcher,
    split_problems,
)
from resd.envs.manufactoria.scoring import extract_program, score_program
from resd.envs.manufactoria.solutions import reference_program
from resd.errors import UserError


@pytest.fixture(scope="module")
def env() -> ManufactoriaHas:
    return ManufactoriaHas()


@pytest.fixture(scope="module")
def problems():
    return generate_problems()


def task_with(env: ManufactoriaHas, family: str, **criterion):
    for split in ("train", "test"):
        for task in env.tasks(split):
            c = task.meta["criterion"]
            if task.meta["family"] == family and all(c[k] == v for k, v in criterion.items()):
                return task
    raise AssertionError(f"no generated {family} task with {criterion}")


def block(code: str) -> str:
    return f"Here is my factory.\n```manufactoria\n{code}```\n"


# Hand-written (not generated) factories.
CONTAINS_RY = """START start:
    NEXT seek
PULLER_RB seek:          # no useful prefix yet
    [R] after_r
    [B] seek
    [EMPTY] seek_yg
PULLER_YG seek_yg:
    [Y] seek
    [G] seek
PULLER_RB after_r:       # the last symbol read was R
    [R] after_r
    [B] seek
    [EMPTY] after_r_yg
PULLER_YG after_r_yg:
    [Y] end              # R then Y: found it
    [G] seek
END end
"""

AT_LEAST_TWO_R = """START start:
    NEXT zero
PULLER_RB zero:
    [R] one
    [B] zero
    [EMPTY] zero_yg
PULLER_YG zero_yg:
    [Y] zero
    [G] zero
PULLER_RB one:
    [R] end
    [B] one
    [EMPTY] one_yg
PULLER_YG one_yg:
    [Y] one
    [G] one
END end
"""

G_THEN_B_IN_ORDER = """START start:
    NEXT want_g
PULLER_RB want_g:
    [R] want_g
    [B] want_g
    [EMPTY] want_g_yg
PULLER_YG want_g_yg:
    [Y] want_g
    [G] want_b
PULLER_RB want_b:
    [R] want_b
    [B] end
    [EMPTY] want_b_yg
PULLER_YG want_b_yg:
    [Y] want_b
    [G] want_b
END end
"""


# --------------------------------------------------------------------------- generators

def test_split_sizes_and_family_counts(env, problems):
    assert env.sizes() == {"train": 742, "test": 132}
    assert collections.Counter(p.family for p in problems) == {
        "contains_substring": 340, "contains_ordered": 340, "contains_count": 194}
    splits = generated_splits()
    ids = [p.id for s in ("train", "test") for p in splits[s]]
    assert len(ids) == len(set(ids)) == 874
    assert [t.id for t in env.tasks("test")] == [p.id for p in splits["test"]]


def test_generation_is_deterministic_and_seeded(problems):
    again = generate_problems(42)
    assert again == problems
    assert split_problems(again, 42) == split_problems(problems, 42)
    other = generate_problems(7)
    assert [p.criterion for p in other] != [p.criterion for p in problems]
    # The split is a shuffle, not the canonical family-by-family order.
    train_families = [p.family for p in split_problems(problems, 42)["train"][:30]]
    assert len(set(train_families)) > 1


def test_patterns_and_requirements_follow_documented_ranges(problems):
    for family in ("contains_substring", "contains_ordered"):
        patterns = [p.criterion.pattern for p in problems if p.family == family]
        assert len(set(patterns)) == FAMILY_SIZES[family]
        assert {len(p) for p in patterns} == {1, 2, 3, 4, 5, 6}
        assert set("".join(patterns)) == set(COLOURS)
    reqs = [p.criterion.requirements for p in problems if p.family == "contains_count"]
    assert len(set(reqs)) == 194 and set(reqs) == set(count_requirement_sets())
    for r in reqs:
        assert 1 <= len(r) <= 3 and sum(n for _, n in r) <= MAX_COUNT_TOTAL and len({c for c, _ in r}) == len(r)


def test_every_test_case_agrees_with_its_criterion(problems):
    for p in problems:
        check = matcher(p.criterion)
        inputs = [t.input for t in p.tests]
        assert len(inputs) == len(set(inputs)) <= MAX_CASES
        assert inputs[:3] == ["", "R", "RB"] and {"BR", "RBR", "BRB", "RRB", "BBR"} <= set(inputs)  # corner tapes
        assert all(len(t) <= 41 and set(t) <= set(COLOURS) for t in inputs)
        verdicts = [t.expected_accepted for t in p.tests]
        assert sum(verdicts) >= 3 and len(verdicts) - sum(verdicts) >= 3, p.id
        assert all(check(t.input) == t.expected_accepted for t in p.tests), p.id


def test_matchers_by_hand():
    assert matcher(Criterion("contains_substring", pattern="RY"))("BRYG")
    assert not matcher(Criterion("contains_substring", pattern="RY"))("YRB")
    assert not matcher(Criterion("contains_substring", pattern="RY"))("RGY")
    assert matcher(Criterion("contains_ordered", pattern="RY"))("RGY")
    assert not matcher(Criterion("contains_ordered", pattern="RY"))("YGR")
    assert matcher(Criterion("contains_ordered", pattern="RRY"))("RBRGY")
    assert not matcher(Criterion("contains_ordered", pattern="RRY"))("RYR")
    assert matcher(Criterion("contains_count", requirements=(("R", 2), ("Y", 1))))("YBRR")
    assert not matcher(Criterion("contains_count", requirements=(("R", 2), ("Y", 1))))("RYB")


def test_tape_counts_and_lengths_follow_the_task_generator(problems):
    # The hub problems carry 21-32 tapes of up to 41 symbols; ours (the same recipe, with our own
    # pattern lengths, down to 1) gives 15-32; the longest tapes pad a pattern with 18 symbols a side.
    counts = [len(p.tests) for p in problems]
    longest = max(len(t.input) for p in problems for t in p.tests)
    assert 15 <= min(counts) and max(counts) <= 32 and longest == 41
    assert sum(c >= 20 for c in counts) > 0.9 * len(counts)
    assert all(t.to_record()["check_output"] is False for t in problems[0].tests)


def test_criteria_wording(problems):
    sub = next(p for p in problems if p.criterion == Criterion("contains_substring", pattern="RY"))
    assert sub.criteria == "Accept if the tape contains the substring 'RY' (must be consecutive); reject otherwise."
    count = next(p for p in problems if p.criterion.requirements == (("R", 2), ("Y", 1)))
    assert count.criteria == "Accept if the tape has at least 2 rs and at least 1 y; reject otherwise."
    assert count.name == "Need 2 Rs and 1 Y"
    ordered = next(p for p in problems if p.criterion == Criterion("contains_ordered", pattern="GB"))
    assert ordered.criteria == ("Accept if the tape contains the subsequence GB (does not have to be consecutive); "
                                "reject otherwise.") and ordered.name == "Contains GB"
    single = next(p for p in problems if p.criterion.requirements == (("B", 5),))
    assert single.name == "At least 5 Bs"


def test_every_generated_problem_is_solved_by_its_reference_factory(problems):
    for p in problems:
        outcome = score_program(reference_program(p.criterion), [t.to_record() for t in p.tests])
        assert outcome.reward == 1.0 and outcome.acc == 1.0, (p.id, outcome.feedback)


# --------------------------------------------------------------------------- prompt and task data

def test_task_prompt_and_meta(env):
    task = env.tasks("train")[0]
    assert len(task.prompt) == 1 and task.prompt[0]["role"] == "user"
    text = task.prompt_text
    assert text.startswith("# Manufactoria factory language") and "\n# Task\n" in text
    # The task's shape: the language manual with an example, then the task, the rule last.
    assert text.endswith("\n\n" + task.meta["criteria"])
    assert "```manufactoria" in text.split("# Task", 1)[0] and "NONE" in text
    assert task.meta["family"] in FAMILY_SIZES and task.meta["tests"]
    assert set(task.meta["tests"][0]) >= {"input", "expected_accepted", "check_output"}
    json.dumps(task.meta)  # run directories store it


def test_registry_builds_it_and_bad_options_fail_clearly():
    assert isinstance(resd.envs.get("manufactoria-has"), ManufactoriaHas)
    with pytest.raises(UserError, match="reward_mode must be one of all_pass, pass_rate"):
        ManufactoriaHas(reward_mode="partial")
    with pytest.raises(UserError, match="source must be one of generated, hf, file"):
        ManufactoriaHas(source="no/such/file.jsonl")
    with pytest.raises(UserError, match="needs train_path and test_path"):
        ManufactoriaHas(source="file", train_path="x.jsonl")
    with pytest.raises(UserError, match="max_steps"):
        ManufactoriaHas(max_steps=10**9)
    with pytest.raises(UserError, match="bad options"):
        resd.envs.get("manufactoria-has", colour_mode="two")
    with pytest.raises(UserError, match="split must be"):
        ManufactoriaHas().tasks("validation")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- scoring

@pytest.mark.parametrize("program, family, criterion", [
    (CONTAINS_RY, "contains_substring", {"pattern": "RY"}),
    (AT_LEAST_TWO_R, "contains_count", {"requirements": [["R", 2]]}),
    (G_THEN_B_IN_ORDER, "contains_ordered", {"pattern": "GB"}),
])
def test_hand_written_correct_factories_score_one(env, program, family, criterion):
    task = task_with(env, family, **criterion)
    outcome = env.score(task, block(program))
    assert outcome.reward == 1.0 and outcome.acc == 1.0 and outcome.solved
    assert outcome.details["error_kind"] is None
    assert outcome.feedback == ""  # the verifier says nothing when every case passes


def test_a_wrongly_rejected_robot_is_shown_alone_as_a_runtime_error(env):
    task = task_with(env, "contains_substring", pattern="YR")
    outcome = env.score(task, block(CONTAINS_RY))
    assert outcome.reward == 0.0 and 0.0 < outcome.acc < 1.0
    assert outcome.acc == sum(outcome.passed) / len(outcome.passed) == outcome.details["n_passed"] / len(outcome.passed)
    fb = outcome.feedback
    assert "Passed" not in fb and fb.startswith("Runtime Error\nrouted to NONE\n")
    # The first failing case that should have been accepted, alone, with its trace.
    tests = task.meta["tests"]
    first = next(i for i, ok in enumerate(outcome.passed) if not ok and tests[i]["expected_accepted"])
    assert f"\nInput\n{tests[first]['input']}\n" in fb
    assert "Trace:" in fb and "step 1: start" in fb and "Should be accepted: True" in fb
    assert "Wrong Answer" not in fb and fb.count("Input") == 1


def test_wrong_accepts_show_the_two_shortest(env):
    # Accepting everything fails exactly the tapes to be rejected: wrong answers, not errors.
    task = task_with(env, "contains_substring", pattern="RY")
    outcome = env.score(task, block("START start:\n    NEXT end\nEND end\n"))
    assert outcome.details["error_kind"] == "wrong"
    fb = outcome.feedback
    assert fb.count("Wrong Answer") == 2 and "Runtime Error" not in fb
    tests = task.meta["tests"]
    failing = sorted((len(t["input"]) * 2, i) for i, t in enumerate(tests) if not t["expected_accepted"])
    shown = [int(line.split()[2].rstrip(":")) for line in fb.split("\n") if line.startswith("Test Case")]
    assert shown == [i + 1 for _, i in failing[:2]]
    assert fb.startswith(f"Test Case {shown[0]}: Wrong Answer\n\nInput\n(empty tape)\n\nFinal tape\n(empty tape)")


def test_pass_rate_mode_rewards_the_fraction_passed():
    env = ManufactoriaHas(reward_mode="pass_rate")
    task = task_with(env, "contains_substring", pattern="YR")
    outcome = env.score(task, block(CONTAINS_RY))
    assert outcome.reward == outcome.acc and 0 < outcome.reward < 1


def test_no_code_block_is_a_format_error(env):
    task = env.tasks("test")[0]
    outcome = env.score(task, "I would build a factory that scans for the pattern.")
    assert isinstance(outcome, Outcome)
    assert outcome.reward == 0.0 and outcome.acc == 0.0 and not outcome.solved
    assert outcome.details["error_kind"] == "format" and "```manufactoria" in outcome.feedback
    assert len(outcome.passed) == len(task.meta["tests"])


def test_last_block_is_graded_and_bare_fences_work(env):
    task = task_with(env, "contains_substring", pattern="RY")
    wrong = "START start:\n    NEXT end\nEND end\n"
    assert env.score(task, block(wrong) + "\nActually:\n" + block(CONTAINS_RY)).reward == 1.0
    assert env.score(task, block(CONTAINS_RY) + "\nActually:\n" + block(wrong)).reward == 0.0
    assert env.score(task, f"```\n{CONTAINS_RY}```").reward == 1.0
    assert extract_program("```manufactoria\nSTART start:\n```") == "START start:"
    # The program may start on the fence line: the block is trimmed.
    assert env.score(task, f"```manufactoria {CONTAINS_RY}```").reward == 1.0
    assert extract_program("```manufactoria") is None and extract_program("``` x") is None


def test_parse_error_feedback_names_the_line(env):
    task = env.tasks("train")[3]
    broken = CONTAINS_RY.replace("PULLER_RB after_r:", "PULLER_RB after_r")
    outcome = env.score(task, block(broken))
    assert outcome.reward == 0.0 and outcome.acc == 0.0 and not any(outcome.passed)
    assert outcome.details["error_kind"] == "parse" and outcome.details["error_line"] == 10
    assert outcome.feedback.startswith("Parse Error\nLine 10: a PULLER_RB declaration needs a colon")


def test_a_looping_robot_is_reported_where_it_is_stuck(env):
    # [EMPTY] -> itself never consumes Y/G fronts or ends on an empty tape: those robots loop.
    looping = "START start:\n    NEXT a\nPULLER_RB a:\n    [R] end\n    [B] end\n    [EMPTY] a\nEND end\n"
    task = task_with(env, "contains_substring", pattern="RY")
    outcome = env.score(task, block(looping))
    assert outcome.details["error_kind"] == "loop"
    fb = outcome.feedback
    # The tape "R" (case 2, to be rejected) is accepted at once, a plain wrong answer; a tape to be
    # accepted that starts with Y or G loops, an error, and is shown alone although it comes later.
    tests = task.meta["tests"]
    assert tests[1]["input"] == "R" and outcome.details["failing_cases"][0] == 2
    looper = next(i for i, ok in enumerate(outcome.passed) if not ok and tests[i]["input"][:1] in ("Y", "G"))
    assert looper > 1 and tests[looper]["expected_accepted"]
    assert fb.startswith(f"Runtime Error\nstill running after 1000 steps (possible infinite loop)\n\nInput\n"
                         f"{tests[looper]['input']}\n")
    assert f"Stuck at: a (PULLER_RB)\nFront symbol: {tests[looper]['input'][0]}\n" in fb and "Wrong Answer" not in fb


def test_uppercase_end_target_is_a_runtime_error(env):
    task = task_with(env, "contains_count", requirements=[["R", 2]])
    outcome = env.score(task, block(AT_LEAST_TWO_R.replace("[R] end", "[R] END")))
    assert outcome.details["error_kind"] == "runtime" and "unknown node 'END'" in outcome.feedback
    assert outcome.reward == 0.0


def test_feedback_is_capped(env):
    task = env.tasks("train")[0]
    huge = "START start:\n    NEXT " + "x" * 5000 + "\nEND end\n"
    outcome = env.score(task, block(huge))
    assert len(outcome.feedback) <= FEEDBACK_LIMIT and outcome.details["error_kind"] == "parse"


# --------------------------------------------------------------------------- other sources

def test_local_jsonl_files_round_trip(tmp_path, env):
    splits = generated_splits()
    for split in ("train", "test"):
        with open(tmp_path / f"has_{split}.jsonl", "w") as f:
            for p in splits[split][:5]:
                f.write(json.dumps(problem_to_record(p)) + "\n")
    local = ManufactoriaHas(source="file", train_path=str(tmp_path / "has_train.jsonl"),
                            test_path=str(tmp_path / "has_test.jsonl"))
    assert local.sizes() == {"train": 5, "test": 5}
    task = local.tasks("test")[0]
    original = env.tasks("test")[0]
    assert task.id == original.id and task.prompt == original.prompt
    assert task.meta["tests"] == original.meta["tests"] and task.meta["criteria"] == original.meta["criteria"]
    assert local.score(task, block(reference_program(splits["test"][0].criterion))).reward == 1.0
    # Loaded records get a reference factory from their criteria sentence.
    assert all(local.score(t, local.reference_solution(t)).reward == 1.0 for t in local.tasks("train"))


@pytest.mark.parametrize("sentence, criterion", [
    ("Accept if the tape contains the substring 'GRRY' (must be consecutive); reject otherwise.",
     Criterion("contains_substring", pattern="GRRY")),
    ("Accept if the tape contains the subsequence BRGR (does not have to be consecutive); reject otherwise.",
     Criterion("contains_ordered", pattern="BRGR")),
    ("Accept if the tape has at least 5 bs; reject otherwise.", Criterion("contains_count", requirements=(("B", 5),))),
    ("Accept if the tape has at least 2 rs and at least 1 g; reject otherwise.",
     Criterion("contains_count", requirements=(("R", 2), ("G", 1)))),
    ("Accept if the tape starts with R; reject otherwise.", None),
    ("Accept if the tape has at least 2 rs and at least 1 r; reject otherwise.", None),
])
def test_criteria_sentences_in_the_public_wording_give_their_criterion(sentence, criterion):
    assert criterion_from_sentence(sentence) == criterion


def test_local_parquet_in_the_training_export_format(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    for split in ("train", "test"):
        rows = []
        for p in generated_splits()[split][:3]:
            rec = problem_to_record(p)
            rows.append({"data_source": "manufactoria-has", "prompt": rec["messages"],
                         "reward_model": {"style": "manufactoria", "ground_truth": json.dumps(rec["ground_truth"])},
                         "extra_info": {"split": split, "index": p.id, "problem_family": p.family, "name": p.name}})
        (tmp_path / split).mkdir()
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / split / "part-0.parquet")
    local = ManufactoriaHas(source="file", train_path=str(tmp_path / "train"), test_path=str(tmp_path / "test"))
    assert [t.id for t in local.tasks("train")] == [p.id for p in generated_splits()["train"][:3]]
    task = local.tasks("test")[1]
    assert task.meta["family"] == generated_splits()["test"][1].family
    assert task.meta["criteria"] == generated_splits()["test"][1].criteria
    assert local.score(task, block(reference_program(generated_splits()["test"][1].criterion))).reward == 1.0


def test_a_record_without_check_output_requires_an_empty_final_tape(tmp_path):
    # The verifier's default: a case that does not say check_output checks it, against
    # expected_output "" -- so a factory that leaves symbols on an accepted robot fails it.
    record = {"id": "t1", "messages": [{"role": "user", "content": "# Task\n\nAccept if the tape has R."}],
              "ground_truth": [{"input": "R", "expected_accepted": True}, {"input": "B", "expected_accepted": False},
                               {"input": "RB", "expected_accepted": True}]}
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(record) + "\n")
    local = ManufactoriaHas(source="file", train_path=str(path), test_path=str(path))
    task = local.tasks("train")[0]
    pulls_one = "START start:\n    NEXT a\nPULLER_RB a:\n    [R] end\nEND end\n"
    outcome = local.score(task, block(pulls_one))  # "RB" ends with "B" left on the tape
    assert outcome.passed == [True, True, False] and outcome.reward == 0.0
    assert outcome.feedback.startswith("Test Case 3: Wrong Answer")
    drains = "START start:\n    NEXT a\nPULLER_RB a:\n    [R] b\nPULLER_RB b:\n    [B] b\n    [R] b\n    [EMPTY] end\nEND end\n"
    assert local.score(task, block(drains)).reward == 1.0


def test_local_file_problems_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="dataset path not found"):
        ManufactoriaHas(source="file", train_path=str(tmp_path / "none.jsonl"),
                        test_path=str(tmp_path / "none.jsonl")).tasks("train")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "messages": []}\n')
    with pytest.raises(UserError, match="ground_truth"):
        ManufactoriaHas(source="file", train_path=str(bad), test_path=str(bad)).tasks("train")


def test_hf_source_offline_fails_with_a_fix(tmp_path):
    code = ("from resd.envs.manufactoria.env import ManufactoriaHas\n"
            "from resd.errors import UserError\n"
            "try:\n    ManufactoriaHas(source='hf').tasks('train')\n"
            "except UserError as e:\n    print('USERERROR', e)\n")
    env_vars = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env_vars, timeout=120)
    assert "USERERROR could not load manufactoria/has_train[train]" in out.stdout, out.stderr[-2000:]
    assert "source: file" in out.stdout
