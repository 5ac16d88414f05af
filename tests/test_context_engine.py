"""Who gets distilled and what each teacher reads: the context engines' shared rules (SDPO,
SDPO+ss, RESD, ROSD) and each engine's own notes, through `engine.step`."""

from __future__ import annotations

import itertools

from resd.context import (ContextConfig, ContextPolicy, ContextUpdater, FirstErrorContext, PeerContext,
                          PlaybookContext, TeacherSlots, teacher_messages, teacher_stats)
from resd.envs import Outcome, Task
from resd.models import tiny_model
from resd.rollout import Sample

SDPO = ContextPolicy(slots=TeacherSlots(previous_trial=False).restricted_to("sdpo"), dont_reprompt_on_self_success=True, feedback_only_without_solution=True)
RESD = ContextPolicy(slots=TeacherSlots().restricted_to("resd"))


_INDEX = itertools.count()  # every sample a distinct index, as in a step's batch


def sample(group: int, reward: float, text: str, feedback: str = "wrong", completion_ids=(3, 4)) -> Sample:
    task = Task(id=f"t{group}", prompt=[{"role": "system", "content": "be brief"},
                                        {"role": "user", "content": f"question {group}"}])
    return Sample(next(_INDEX), group, task, text, [1, 2], list(completion_ids), False,
                  Outcome(reward=reward, acc=reward, feedback="" if reward else feedback), succeeded=reward >= 1.0)


def user_turn(template, s, context) -> str:
    return teacher_messages(template, s.task.prompt, context)[-1]["content"]


def test_sdpo_failure_sees_a_successful_peer_and_no_feedback():
    group = [sample(0, 0.0, "bad answer"), sample(0, 1.0, "GOOD ANSWER")]
    fail, success = PeerContext(SDPO).step(0, group).contexts
    assert fail.distill and fail.solution_source == "peer" and fail.feedback is None
    messages = teacher_messages("sdpo", group[0].task.prompt, fail)
    assert "GOOD ANSWER" in messages[-1]["content"] and "question 0" in messages[-1]["content"]
    assert messages[0] == {"role": "system", "content": "be brief"}
    # The only success has no *other* successful peer: SDPO does not distil it.
    assert not success.distill


def test_sdpo_ss_distils_a_success_on_its_own_solution():
    group = [sample(0, 0.0, "bad"), sample(0, 1.0, "GOOD")]
    policy = ContextPolicy(slots=SDPO.slots, dont_reprompt_on_self_success=False, feedback_only_without_solution=True)
    _, success = PeerContext(policy).step(0, group).contexts
    assert success.distill and "GOOD" in user_turn("sdpo", group[1], success)


def test_sdpo_all_fail_group_uses_feedback_or_nothing():
    group = [sample(1, 0.0, "a", feedback="test 3 failed"), sample(1, 0.0, "b", feedback="")]
    with_feedback, without = PeerContext(SDPO).step(0, group).contexts
    assert with_feedback.distill and "test 3 failed" in user_turn("sdpo", group[0], with_feedback)
    assert not without.distill  # no peer, no feedback: the teacher would know nothing more


def test_without_the_feedback_slot_a_failed_group_teaches_nothing():
    policy = ContextPolicy(slots=TeacherSlots(previous_trial=False, feedback=False).restricted_to("sdpo"),
                           dont_reprompt_on_self_success=True, feedback_only_without_solution=True)
    contexts = PeerContext(policy).step(0, [sample(1, 0.0, "a"), sample(1, 0.0, "b"),
                                            sample(2, 0.0, "c"), sample(2, 1.0, "d")]).contexts
    assert [c.distill for c in contexts] == [False, False, True, False]
    assert teacher_stats(contexts) == {"teacher/solution_fraction": 0.25, "teacher/feedback_fraction": 0.0,
                                       "teacher/reflection_fraction": 0.0, "teacher/playbook_fraction": 0.0}


class ScriptedModel:
    """The context engine's `generate`: fixed answers in the formats the parsers read."""

    def __init__(self, answer):
        self.answer, self.prompts = answer, []

    def __call__(self, prompts, max_new_tokens, temperature):
        self.prompts.extend(prompts)
        return [self.answer(p[-1]["content"]) for p in prompts]


def resd_answer(user: str) -> str:
    if "CHECKER FEEDBACK" in user:
        return "DIAGNOSIS: the answer ignored rule 1 about brevity, so the rule FAIL came back.\nTAGS: NONE"
    if "WHAT WENT WRONG" in user:
        return "ADD rules: keep every answer under ten words to pass rule 1."
    return "TAGS: NONE"


def test_resd_teacher_reads_playbook_reflection_feedback_and_trial():
    updater = ContextUpdater(ContextConfig(), ScriptedModel(resd_answer), seed=0)
    s = [sample(3, 0.0, "my try", feedback="rule 1 FAIL")]
    (context,) = PlaybookContext(RESD, updater).step(1, s).contexts
    text = user_turn("resd", s[0], context)
    for part in ("keep every answer under ten words", "ignored rule 1", "rule 1 FAIL", "my try"):
        assert part in text, part
    assert context.playbook and context.reflection and context.solution is None


def test_resd_success_is_buffered_and_shown_on_the_next_failure():
    updater = ContextUpdater(ContextConfig(), ScriptedModel(resd_answer), seed=0)
    engine = PlaybookContext(RESD, updater)
    (first,) = engine.step(1, [sample(5, 1.0, "an earlier success")]).contexts
    # RESD distils a success too, its teacher reading the buffered solution (App. B reweights them).
    assert first.distill and first.solution_source == "buffer"
    (later,) = engine.step(2, [sample(5, 0.0, "a new failure", feedback="wrong")]).contexts
    assert later.solution == "an earlier success" and later.solution_source == "buffer"


def test_ablation_slots_are_neither_shown_nor_computed():
    """The engine a run builds (`build_context_engine`) for the paper's ablations (Table 3)."""
    from resd.train import load_config
    from resd.train.build import build_context_engine

    model = ScriptedModel(resd_answer)
    cfg = load_config(method="resd", teacher_slots={"reflection": False, "playbook": False, "solution": False})
    engine = build_context_engine(cfg, None, model)
    (context,) = engine.step(1, [sample(4, 0.0, "try", feedback="")]).contexts
    assert not context.distill  # nothing privileged left once the slots are off
    assert model.prompts == []  # and no reflection or curation was generated for them
    engine.step(2, [sample(4, 1.0, "solved")])
    assert engine.updater.solution("t4") is None  # no buffer is kept for a solution slot that is off
    full = build_context_engine(load_config(method="resd"), None, model)
    (context,) = full.step(1, [sample(4, 0.0, "try", feedback="rule 1 FAIL")]).contexts
    assert context.distill and context.reflection and model.prompts  # the same engine with the slots on


def test_rosd_distils_from_the_quoted_first_error_with_its_explanation():
    model, tokenizer = tiny_model()
    wrong = "first part ok then the wrong bit here"
    ids = tokenizer(wrong, add_special_tokens=False)["input_ids"]
    reflector = ScriptedModel(lambda user: "<first_error>the wrong bit</first_error><why>use the right bit</why>")
    rosd = ContextPolicy(slots=TeacherSlots(previous_trial=False, feedback=False).restricted_to("rosd"),
                         dont_reprompt_on_self_success=True, feedback_only_without_solution=True)
    engine = FirstErrorContext(rosd, reflector, tokenizer, max_new_tokens=32)
    group = [sample(6, 0.0, wrong, completion_ids=ids), sample(6, 1.0, "all right")]
    step = engine.step(0, group)
    fail, success = step.contexts
    # the quote starts inside the token " the": the tokens before it are those of the text before it
    start = len(tokenizer(wrong[: wrong.index(" the wrong bit")], add_special_tokens=False)["input_ids"])
    assert fail.distill and fail.distill_from == start > 0
    assert fail.reflection == "use the right bit" and fail.solution == "all right"
    assert "use the right bit" in user_turn("rosd", group[0], fail)
    assert not success.distill
    assert step.stats["rosd/reflections"] == 1 and step.stats["rosd/quote_found_fraction"] == 1.0
    assert "the wrong bit here" in reflector.prompts[0][-1]["content"]  # the reflector saw the failure
    # A group without a success is skipped: the reflector needs a correct answer to compare with.
    assert not any(c.distill for c in engine.step(1, [sample(7, 0.0, "a"), sample(7, 0.0, "b")]).contexts)
