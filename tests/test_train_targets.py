"""Who gets distilled and what the teacher sees (SDPO / SDPO+ss / RESD / ROSD rules)."""

from __future__ import annotations

from resd.envs import Outcome, Task
from resd.train.targets import ScoredSample, TeacherSettings, choose_teachers


def sample(group: int, reward: float, text: str, feedback: str = "wrong") -> ScoredSample:
    task = Task(id=f"t{group}", prompt=[{"role": "system", "content": "be brief"},
                                        {"role": "user", "content": f"question {group}"}])
    return ScoredSample(task, group, text, [1, 2], [3, 4], False,
                        Outcome(reward=reward, acc=reward, feedback="" if reward else feedback))


def settings(**kw) -> TeacherSettings:
    base = dict(template="sdpo", success_threshold=1.0, use_peer_solution=True, use_buffer=False,
                dont_reprompt_on_self_success=True, feedback_only_without_solution=True, include_feedback=True,
                include_previous_trial=False, include_reflection=False, include_playbook=False,
                require_group_success=False)
    base.update(kw)
    return TeacherSettings(**base)


def user_turn(choice) -> str:
    return choice.messages[-1]["content"]


def test_sdpo_failure_sees_a_successful_peer_and_no_feedback():
    group = [sample(0, 0.0, "bad answer"), sample(0, 1.0, "GOOD ANSWER")]
    fail, success = choose_teachers(group, settings())
    assert fail.distilled and fail.solution_source == "peer" and not fail.used_feedback
    assert "GOOD ANSWER" in user_turn(fail) and "question 0" in user_turn(fail)
    assert fail.messages[0] == {"role": "system", "content": "be brief"}
    # The only success has no *other* successful peer: SDPO does not distil it.
    assert not success.distilled


def test_sdpo_ss_distils_a_success_on_its_own_solution():
    group = [sample(0, 0.0, "bad"), sample(0, 1.0, "GOOD")]
    _, success = choose_teachers(group, settings(dont_reprompt_on_self_success=False))
    assert success.distilled and "GOOD" in user_turn(success)


def test_sdpo_all_fail_group_uses_feedback_or_nothing():
    group = [sample(1, 0.0, "a", feedback="test 3 failed"), sample(1, 0.0, "b", feedback="")]
    with_feedback, without = choose_teachers(group, settings())
    assert with_feedback.distilled and with_feedback.used_feedback and "test 3 failed" in user_turn(with_feedback)
    assert not without.distilled  # no peer, no feedback: the teacher would know nothing more


def test_rosd_skips_groups_without_a_success():
    group = [sample(2, 0.0, "a", feedback="f"), sample(2, 0.0, "b", feedback="f")]
    assert not any(c.distilled for c in choose_teachers(group, settings(require_group_success=True)))


def test_resd_uses_buffer_playbook_and_reflection():
    s = [sample(3, 0.0, "my try", feedback="rule 1 FAIL")]
    (choice,) = choose_teachers(
        s, settings(template="resd", use_buffer=True, dont_reprompt_on_self_success=False,
                    feedback_only_without_solution=False, include_previous_trial=True, include_reflection=True,
                    include_playbook=True),
        playbook_text=lambda task_id: "[rules-1] keep it short",
        reflection=lambda i: "the answer ignored rule 1",
        buffered_solution=lambda task_id: "an earlier success")
    text = user_turn(choice)
    for part in ("keep it short", "the answer ignored rule 1", "an earlier success", "rule 1 FAIL", "my try"):
        assert part in text, part
    assert choice.solution_source == "buffer" and choice.used_playbook and choice.used_reflection


def test_ablation_switches_remove_slots():
    s = [sample(4, 0.0, "try", feedback="")]
    (choice,) = choose_teachers(
        s, settings(template="resd", use_buffer=False, include_reflection=False, include_playbook=False),
        playbook_text=lambda task_id: "[rules-1] entry", reflection=lambda i: "diagnosis")
    assert not choice.distilled  # nothing privileged left once the slots are off
