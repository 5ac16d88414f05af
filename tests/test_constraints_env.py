"""The constraints environment: checkers, feedback, generation and our reference answers."""

from __future__ import annotations

import pytest

from resd.envs import get
from resd.envs.base import Task
from resd.envs.constraints import RULES, ConstraintsEnv, check_all, count_sentences
from resd.envs.text import strip_reasoning as strip_thinking
from resd.errors import UserError


def _task(*constraints: tuple[str, dict]) -> Task:
    cs = [{"kind": k, "params": p} for k, p in constraints]
    return Task(id="t", prompt=[{"role": "user", "content": "x"}], meta={"topic": "x", "constraints": cs})


@pytest.mark.parametrize("kind,params,good,bad", [
    ("keyword", {"word": "blue"}, "The sky is Blue today.", "The sky is bluish today."),
    ("keyword_twice", {"word": "river", "times": 2}, "A river meets a river.", "A river runs."),
    ("max_words", {"n": 5}, "One two three four.", "One two three four five."),
    ("min_words", {"n": 5}, "One two three four five.", "One two three four."),
    ("no_commas", {}, "No commas here.", "Well, yes."),
    ("number", {}, "I have 3 cats.", "I have three cats."),
    ("starts_with", {"word": "Today"}, "today we rest.", "We rest today."),
    ("avoid_word", {"word": "the"}, "Cats nap in thermal sun.", "The cats nap."),
    ("lowercase", {}, "all quiet here.", "All quiet here."),
    ("uppercase", {}, "ALL QUIET HERE 42!", "ALL QUIET Here."),
    ("ends_with", {"mark": "!"}, "What a day!", "What a day."),
    ("quotes", {}, '"Hello there."', 'Hello "there."'),
    ("sentences", {"n": 2}, "One here. Two there!", "Only one here."),
    ("bullets", {"n": 3}, "- a\n- b\n* c", "- a\n- b"),
])
def test_each_rule_accepts_good_and_rejects_bad(kind, params, good, bad):
    rule = RULES[kind]
    assert rule.check(good, params)[0] is True
    ok, why = rule.check(bad, params)
    assert ok is False and why


def test_score_gives_per_rule_feedback_acc_and_all_pass_reward():
    env = ConstraintsEnv(train_size=1, test_size=1)
    task = _task(("keyword", {"word": "blue"}), ("lowercase", {}))
    half = env.score(task, "The blue sea.")
    assert half.passed == [True, False] and half.acc == 0.5 and half.reward == 0.0
    assert "1 of 2 constraints satisfied" in half.feedback
    assert '[PASS] Include the word "blue"' in half.feedback
    assert "[FAIL] Write everything in lowercase" in half.feedback and '"The"' in half.feedback
    full = env.score(task, "the blue sea.")
    assert full.reward == 1.0 and full.acc == 1.0 and full.solved
    frac = ConstraintsEnv(train_size=1, test_size=1, reward="fraction").score(task, "The blue sea.")
    assert frac.reward == 0.5


def test_thinking_is_stripped_and_empty_answers_fail_everything():
    assert strip_thinking("<think>The plan</think>\nthe answer") == "the answer"
    assert strip_thinking("reasoning...</think>final") == "final"
    assert strip_thinking("<think>never closed") == ""
    env = ConstraintsEnv(train_size=1, test_size=1)
    task = _task(("lowercase", {}), ("no_commas", {}))
    assert env.score(task, "<think>Thinking, Loudly</think>all good").reward == 1.0
    empty = env.score(task, "<think>only thoughts")
    assert empty.passed == [False, False] and "empty" in empty.feedback


def test_sentence_counting():
    assert count_sentences("One. Two! Three?") == 3
    assert count_sentences("No final stop") == 1
    assert count_sentences('"Quoted one. Quoted two."') == 2


def test_generation_is_deterministic_sized_and_disjoint():
    a, b = ConstraintsEnv(), ConstraintsEnv()
    assert a.sizes() == {"train": 512, "test": 128}
    assert [t.prompt for t in a.tasks("train")] == [t.prompt for t in b.tasks("train")]
    assert {t.prompt_text for t in a.tasks("train")}.isdisjoint({t.prompt_text for t in a.tasks("test")})
    other = ConstraintsEnv(seed=1)
    assert [t.prompt for t in other.tasks("train")] != [t.prompt for t in a.tasks("train")]
    counts = [len(t.meta["constraints"]) for t in a.tasks("train")]
    assert set(counts) == {1, 2, 3} and counts.count(3) < counts.count(1)
    small = ConstraintsEnv(train_size=10, test_size=3, max_constraints=1)
    assert small.sizes() == {"train": 10, "test": 3}
    assert all(len(t.meta["constraints"]) == 1 for t in small.tasks("train"))


def test_no_prompt_combines_conflicting_rules():
    for t in ConstraintsEnv().tasks("train"):
        tags = [RULES[c["kind"]].tags for c in t.meta["constraints"]]
        for i in range(len(tags)):
            for j in range(i + 1, len(tags)):
                assert not (tags[i] & tags[j]), t.prompt_text


def test_reference_answer_satisfies_every_generated_prompt():
    env = ConstraintsEnv()
    for split in ("train", "test"):
        for task in env.tasks(split):
            outcome = env.score(task, env.reference_solution(task))
            assert outcome.reward == 1.0, (task.prompt_text, env.reference_solution(task), outcome.feedback)


def test_prompt_states_each_rule():
    task = ConstraintsEnv().tasks("train")[0]
    for desc, _, _ in check_all("x", task.meta["constraints"]):
        assert desc in task.prompt_text


def test_registry_and_bad_options():
    env = get("constraints", train_size=4, test_size=2)
    assert isinstance(env, ConstraintsEnv) and env.sizes() == {"train": 4, "test": 2}
    with pytest.raises(UserError, match="reward"):
        ConstraintsEnv(reward="sometimes")
    with pytest.raises(UserError, match="max_constraints"):
        ConstraintsEnv(max_constraints=5)
