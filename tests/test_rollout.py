"""The one sample record (`resd.rollout`): success decided once with the run's threshold, groups
built once, and a batch gathered from several ranks ordered and numbered like one process's."""

from __future__ import annotations

from toyenv import LetterEnv

from resd.envs import Outcome, Task
from resd.rollout import groups_of, in_batch_order, score_samples


class HalfCredit(LetterEnv):
    """Reward 0.5 for an answer with the letter, 1.0 for one that is the letter alone."""

    def score(self, task, completion):
        letter = task.meta["letter"]
        reward = 1.0 if completion == letter else 0.5 if letter in completion else 0.0
        return Outcome(reward=reward, acc=reward, passed=[reward == 1.0], feedback="")


def test_success_is_reward_at_least_the_threshold_decided_once():
    env = HalfCredit()
    tasks = env.tasks("train")[:2]  # letters a and e
    answers = [["a", "ab", "x"], ["e", "zz", "be"]]
    strict = score_samples(env, tasks, answers, 1.0)
    lenient = score_samples(env, tasks, answers, 0.5)
    assert [s.succeeded for s in strict] == [True, False, False, True, False, False]
    assert [s.succeeded for s in lenient] == [True, True, False, True, False, True]
    assert [(s.index, s.group, s.text) for s in strict[:4]] == [(0, 0, "a"), (1, 0, "ab"), (2, 0, "x"), (3, 1, "e")]
    groups = groups_of(lenient)
    assert [g.task.id for g in groups] == [t.id for t in tasks]
    assert [len(g.successes()) for g in groups] == [2, 2] and groups[0].rewards == [1.0, 0.5, 0.0]
    assert not groups_of(score_samples(env, tasks[:1], [["x", "y"]], 1.0))[0].any_succeeded


def test_a_gathered_batch_is_ordered_by_prompt_and_numbered():
    env = LetterEnv()
    tasks = env.tasks("train")[:4]
    # rank 0 scored prompts 0 and 2, rank 1 prompts 1 and 3 (each numbers its own samples from 0)
    rank0 = score_samples(env, [tasks[0], tasks[2]], [["a", "b"], ["c", "o"]], 1.0, groups=[0, 2])
    rank1 = score_samples(env, [tasks[1], tasks[3]], [["e", "f"], ["g", "h"]], 1.0, groups=[1, 3])
    batch = in_batch_order(rank1 + rank0)
    assert [(s.index, s.group, s.text) for s in batch] == [
        (0, 0, "a"), (1, 0, "b"), (2, 1, "e"), (3, 1, "f"), (4, 2, "c"), (5, 2, "o"), (6, 3, "g"), (7, 3, "h")]
    assert [s.task.id for s in batch[::2]] == [t.id for t in tasks]
    assert [s.succeeded for s in batch] == [True, False, True, False, False, True, False, False]


def test_a_task_is_read_through_its_record_not_its_text():
    """Two identical answers to one prompt stay two samples with their own index."""
    task = Task(id="t", prompt=[{"role": "user", "content": "Write a word with a (0)."}], meta={"letter": "a"})
    twins = score_samples(LetterEnv(), [task], [["banana", "banana"]], 1.0)
    assert [s.index for s in twins] == [0, 1] and twins[0].text == twins[1].text and twins[0] != twins[1]
