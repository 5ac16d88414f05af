"""TRL-style reward functions and dataset built from an Environment."""

from __future__ import annotations

import pytest

import resd.envs
from resd.envs.adapters import completion_text, reward_functions, to_dataset
from resd.envs.base import Environment, Outcome, Task
from resd.errors import UserError


@resd.envs.register("adapter-test-words")
class WordsEnv(Environment):
    """Each test case is a word the answer must contain; counts how often it scores."""

    def __init__(self):
        self.score_calls = 0

    def tasks(self, split):
        words = {"train": [["red", "blue"], ["green"]], "test": [["cat"]]}[split]
        return [Task(id=f"{split}-{i}", prompt=[{"role": "user", "content": f"say {' and '.join(w)}"}],
                     meta={"words": w}) for i, w in enumerate(words)]

    def score(self, task, completion):
        self.score_calls += 1
        passed = [w in completion for w in task.meta["words"]]
        return Outcome(reward=float(all(passed)), acc=sum(passed) / len(passed),
                       feedback="ok" if all(passed) else f"missing {[w for w, p in zip(task.meta['words'], passed) if not p]}",
                       passed=passed)


def test_trl_call_convention_with_plain_completions():
    env = WordsEnv()
    reward, acc = reward_functions(env)
    assert (reward.__name__, acc.__name__) == ("reward", "acc")
    kwargs = dict(prompts=["p"] * 3, completions=["red blue", "red", "a cat"], completion_ids=[[1]] * 3,
                  task_id=["train-0", "train-0", "test-0"], trainer_state=None, log_extra=None, log_metric=None)
    assert reward(**kwargs) == [1.0, 0.0, 1.0]
    assert acc(**kwargs) == [1.0, 0.5, 1.0]
    assert env.score_calls == 3  # the second function reused the first one's scoring pass
    assert reward.last_feedback == ["ok", "missing ['blue']", "ok"] == acc.last_feedback
    assert [o.passed for o in reward.last_outcomes] == [[True, True], [True, False], [True]]


def test_conversational_completions():
    reward, _ = reward_functions(WordsEnv())
    completions = [[{"role": "assistant", "content": "green"}], [{"role": "assistant", "content": "blue"}]]
    assert reward(prompts=None, completions=completions, task_id=["train-1", "train-1"]) == [1.0, 0.0]


def test_completion_text():
    assert completion_text("x") == "x"
    assert completion_text([{"role": "assistant", "content": "a"}, {"role": "tool", "content": "t"},
                            {"role": "assistant", "content": "b"}]) == "ab"
    with pytest.raises(TypeError):
        completion_text(3)


def test_missing_or_unknown_task_ids_are_clear_errors():
    reward, _ = reward_functions(WordsEnv())
    with pytest.raises(ValueError, match="task_id"):
        reward(prompts=["p"], completions=["x"])
    with pytest.raises(ValueError, match="unknown task id"):
        reward(prompts=["p"], completions=["x"], task_id=["nope"])
    with pytest.raises(ValueError, match="1 completions but 2 task ids"):
        reward(prompts=["p"], completions=["x"], task_id=["train-0", "train-1"])


def test_explicit_task_map_limits_what_is_scored():
    env = WordsEnv()
    only_test = {t.id: t for t in env.tasks("test")}
    reward, _ = reward_functions(env, only_test)
    assert reward(completions=["cat"], task_id=["test-0"]) == [1.0]
    with pytest.raises(ValueError, match="unknown task id"):
        reward(completions=["red"], task_id=["train-0"])


def test_to_dataset_has_prompt_messages_and_task_ids():
    env = WordsEnv()
    dataset = to_dataset(env, "train")
    assert dataset.column_names == ["prompt", "task_id"]
    assert dataset[0] == {"prompt": [{"role": "user", "content": "say red and blue"}], "task_id": "train-0"}
    assert len(to_dataset(env, "train", limit=1)) == 1


def test_to_dataset_of_an_empty_split_is_a_user_error():
    class Empty(WordsEnv):
        def tasks(self, split):
            return []

    with pytest.raises(UserError, match="no train tasks"):
        to_dataset(Empty(), "train")


def test_real_grpo_trainer_step_uses_the_reward_functions(tmp_path):
    from trl import GRPOConfig, GRPOTrainer

    from resd.models import tiny_model

    model, tokenizer = tiny_model()
    env = WordsEnv()
    reward, acc = reward_functions(env)
    args = GRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2, max_completion_length=4,
        max_steps=1, learning_rate=1e-5, use_cpu=True, report_to=[], logging_steps=1, save_strategy="no",
        reward_weights=[1.0, 0.0], bf16=False,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=[reward, acc], args=args,
                          train_dataset=to_dataset(env, "train"), processing_class=tokenizer)
    trainer.train()
    logged = {k for entry in trainer.state.log_history for k in entry}
    assert "rewards/reward/mean" in logged and "rewards/acc/mean" in logged
    assert len(reward.last_feedback) == 4 and env.score_calls == 4
