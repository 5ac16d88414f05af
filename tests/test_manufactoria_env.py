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
    MAX_TAPE_LENGTH,
    Criterion,
    count_requirement_sets,
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
        assert "" in inputs and all(c in inputs for c in COLOURS)  # corner cases
        assert all(len(t) <= MAX_TAPE_LENGTH and set(t) <= set(COLOURS) for t in inputs)
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


def test_criteria_wording(problems):
    sub = next(p for p in problems if p.criterion == Criterion("contains_substring", pattern="RY"))
    assert sub.criteria == "Accept if the tape contains the substring 'RY' (must be consecutive); reject otherwise."
    count = next(p for p in problems if p.criterion.requirements == (("R", 2), ("Y", 1)))
    assert count.criteria == "Accept if the tape has at least 2 rs and at least 1 y; reject otherwise."


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
    assert task.meta["criteria"] in text.split("# Task", 1)[1]
    assert "```manufactoria" in text.split("# Task", 1)[1]
    assert task.meta["family"] in FAMILY_SIZES and task.meta["tests"]
    assert set(task.meta["tests"][0]) >= {"input", "expected_accepted", "check_output"}
    json.dumps(task.meta)  # run directories store it


def test_registry_builds_it_and_bad_options_fail_clearly():
    assert isinstance(resd.envs.get("manufactoria-has"), ManufactoriaHas)
    with pytest.raises(UserError, match="reward_mode must be one of all_pass, pass_rate"):
        ManufactoriaHas(reward_mode="partial")
    with pytest.raises(UserError, match="not a known name or an existing path"):
        ManufactoriaHas(source="no/such/file.jsonl")
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
    assert "all" in outcome.feedback and str(len(task.meta["tests"])) in outcome.feedback


def test_wrong_factory_gets_partial_acc_zero_reward_and_judge_feedback(env):
    task = task_with(env, "contains_substring", pattern="YR")
    outcome = env.score(task, block(CONTAINS_RY))
    assert outcome.reward == 0.0 and 0.0 < outcome.acc < 1.0
    assert outcome.acc == sum(outcome.passed) / len(outcome.passed) == outcome.details["n_passed"] / len(outcome.passed)
    assert outcome.details["error_kind"] == "wrong"
    fb = outcome.feedback
    assert fb.startswith(f"Passed {sum(outcome.passed)}/{len(outcome.passed)} test cases.")
    assert fb.count("Wrong Answer") == 2  # at most two failing cases are shown
    first = outcome.passed.index(False)
    case = task.meta["tests"][first]
    assert f"Test Case {first + 1}: Wrong Answer" in fb and f'Input: "{case["input"]}"' in fb
    assert "Expected: " + ("accepted" if case["expected_accepted"] else "rejected") in fb
    assert "Trace: " in fb and "seek" in fb


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
    assert extract_program("```manufactoria\nSTART start:\n```") == "START start:\n"


def test_parse_error_feedback_names_the_line(env):
    task = env.tasks("train")[3]
    broken = CONTAINS_RY.replace("PULLER_RB after_r:", "PULLER_RB after_r")
    outcome = env.score(task, block(broken))
    assert outcome.reward == 0.0 and outcome.acc == 0.0 and not any(outcome.passed)
    assert outcome.details["error_kind"] == "parse" and outcome.details["error_line"] == 10
    assert outcome.feedback.startswith("Parse Error: Line 10: missing ':'")


def test_loop_errors_are_reported_before_wrong_answers(env):
    # [EMPTY] -> itself never consumes Y/G fronts or ends on an empty tape: those robots loop.
    looping = "START start:\n    NEXT a\nPULLER_RB a:\n    [R] end\n    [B] end\n    [EMPTY] a\nEND end\n"
    task = task_with(env, "contains_substring", pattern="RY")
    outcome = env.score(task, block(looping))
    assert outcome.details["error_kind"] == "loop"
    fb = outcome.feedback
    first_case = fb.split("\n\n")[1]
    assert "Runtime Error" in first_case and "infinite loop" in first_case and "Stuck" in first_case
    assert "(last 15 of 1000 visits)" in first_case
    # The single-colour tape "R" (case 2, expected: rejected) is accepted at once: a plain wrong
    # answer with a lower case number than any looping case, yet the loop is shown first.
    assert task.meta["tests"][1]["input"] == "R" and outcome.details["failing_cases"][0] == 2
    loop_case = int(first_case.split(":")[0].removeprefix("Test Case "))
    assert loop_case > 2 and "Test Case 2: Wrong Answer" not in fb.split("\n\n")[1]


def test_uppercase_end_target_is_a_runtime_error(env):
    task = task_with(env, "contains_count", requirements=[["R", 2]])
    outcome = env.score(task, block(AT_LEAST_TWO_R.replace("[R] end", "[R] END")))
    assert outcome.details["error_kind"] == "runtime" and "Unknown node: END" in outcome.feedback
    assert outcome.reward == 0.0


def test_feedback_is_capped(env):
    task = env.tasks("train")[0]
    huge = "START start:\n    NEXT " + "x" * 5000 + "\nEND end\n"
    outcome = env.score(task, block(huge))
    assert len(outcome.feedback) <= FEEDBACK_LIMIT and outcome.details["error_kind"] == "parse"


# --------------------------------------------------------------------------- other sources

def test_local_jsonl_directory_round_trip(tmp_path, env):
    splits = generated_splits()
    for split in ("train", "test"):
        with open(tmp_path / f"has_{split}.jsonl", "w") as f:
            for p in splits[split][:5]:
                f.write(json.dumps(problem_to_record(p)) + "\n")
    local = ManufactoriaHas(source=str(tmp_path))
    assert local.sizes() == {"train": 5, "test": 5}
    task = local.tasks("test")[0]
    original = env.tasks("test")[0]
    assert task.id == original.id and task.prompt == original.prompt
    assert task.meta["tests"] == original.meta["tests"] and task.meta["criteria"] == original.meta["criteria"]
    assert local.score(task, block(reference_program(splits["test"][0].criterion))).reward == 1.0


def test_local_parquet_in_resd_format_with_split_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for split in ("train", "test"):
        for p in generated_splits()[split][:3]:
            rec = problem_to_record(p)
            rows.append({"data_source": "manufactoria-has", "prompt": rec["messages"],
                         "reward_model": {"style": "manufactoria", "ground_truth": json.dumps(rec["ground_truth"])},
                         "extra_info": {"split": split, "index": p.id, "problem_family": p.family, "name": p.name}})
    path = tmp_path / "has.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    local = ManufactoriaHas(source=str(path))
    assert [t.id for t in local.tasks("train")] == [p.id for p in generated_splits()["train"][:3]]
    task = local.tasks("test")[1]
    assert task.meta["family"] == generated_splits()["test"][1].family
    assert task.meta["criteria"] == generated_splits()["test"][1].criteria
    assert local.score(task, block(reference_program(generated_splits()["test"][1].criterion))).reward == 1.0


def test_local_file_problems_are_clear_errors(tmp_path):
    no_split = tmp_path / "rows.jsonl"
    no_split.write_text(json.dumps(problem_to_record(generated_splits()["train"][0])) + "\n")
    with pytest.raises(UserError, match="no 'split'"):
        ManufactoriaHas(source=str(no_split)).tasks("train")
    bad = tmp_path / "bad_{split}.jsonl"
    for split in ("train", "test"):
        (tmp_path / f"bad_{split}.jsonl").write_text('{"id": "x", "messages": []}\n')
    with pytest.raises(UserError, match="ground_truth"):
        ManufactoriaHas(source=str(bad)).tasks("train")


def test_hf_source_offline_fails_with_a_fix(tmp_path):
    code = ("from resd.envs.manufactoria.env import ManufactoriaHas\n"
            "from resd.errors import UserError\n"
            "try:\n    ManufactoriaHas(source='hf').tasks('train')\n"
            "except UserError as e:\n    print('USERERROR', e)\n")
    env_vars = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env_vars, timeout=120)
    assert "USERERROR could not load manufactoria/has_train" in out.stdout, out.stderr[-2000:]
    assert "source='generated'" in out.stdout
