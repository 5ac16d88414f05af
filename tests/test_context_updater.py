"""The context updater (paper §3.3, Alg. 1 lines 5–12): batching, dedup, tags, curation, buffer,
scope, switches, robustness to bad model output, and checkpoint round trips."""

from __future__ import annotations

import json
import re

import pytest

from resd.context import ContextConfig, ContextUpdater
from resd.envs.base import Outcome, Task
from resd.errors import UserError
from resd.rollout import Sample


def sample(example_id: str, ok: bool, response: str = "my answer", feedback: str = "2/5 tests passed") -> Sample:
    task = Task(id=example_id, prompt=[{"role": "user", "content": f"Solve problem {example_id}."}])
    return Sample(index=0, group=0, task=task, text=response, prompt_ids=[], completion_ids=[], truncated=False,
                  outcome=Outcome(reward=1.0 if ok else 0.0, acc=1.0 if ok else 0.4,
                                  feedback="" if ok else feedback, passed=[ok]), succeeded=ok)


class FakeModel:
    """Deterministic stand-in for `generate`: answers each kind of prompt in the expected format,
    tags every playbook id it is shown, and records each call."""

    LESSONS = ["Edge case: reject when the tape is empty.", "Edge case: declare every state you branch to.",
               "Edge case: put the program in one code block.", "Edge case: skip colours outside the pattern.",
               "Edge case: count symbols before accepting.", "Edge case: never loop without reading a symbol."]

    def __init__(self, *, tag: str = "helpful", lesson: str | None = None, garbage: bool = False) -> None:
        self.calls: list[tuple[int, int, float]] = []
        self.tag, self.lesson, self.garbage = tag, lesson, garbage
        self.problems: dict[str, int] = {}  # problem id -> its own distinct lesson

    def __call__(self, prompts, max_new_tokens, temperature):
        self.calls.append((len(prompts), max_new_tokens, temperature))
        return [self.answer(p[-1]["content"]) for p in prompts]

    def answer(self, user: str) -> str:
        if self.garbage:
            return "lorem"
        ids = re.findall(r"\[([a-z]+-\d{5})\]", user)
        problem = re.search(r"Solve problem (\w+)", user)
        pid = problem.group(1) if problem else "?"
        tags = "\n".join(f"{i} {self.tag}" for i in ids) or "NONE"
        if "CHECKER FEEDBACK" in user:
            return f"DIAGNOSIS: The answer to {pid} missed an edge case, so some tests never passed.\nTAGS:\n{tags}"
        if "SUCCESSFUL ATTEMPT" in user:
            return f"TAGS:\n{tags}"
        if "WHAT WENT WRONG" in user:
            lesson = self.lesson or self.LESSONS[self.problems.setdefault(pid, len(self.problems))]
            return f"ADD mistakes: {lesson}"
        raise AssertionError("unexpected prompt")


def make(config: ContextConfig | None = None, **model_kw) -> tuple[ContextUpdater, FakeModel]:
    model = FakeModel(**model_kw)
    return ContextUpdater(config or ContextConfig(), model, seed=0), model


def test_one_generate_call_per_phase_for_the_whole_batch():
    updater, model = make()
    batch = [sample(f"p{i}", ok=i >= 4) for i in range(6)]  # 4 failures, 2 successes
    stats = updater.update(1, batch)
    # empty playbook: no success tagging; one reflection call (4 prompts), one curation call (4)
    assert [c[0] for c in model.calls] == [4, 4]
    assert stats["context/generate_calls"] == 2
    assert stats["context/reflections"] == 4 and stats["context/added"] == 4
    model.calls.clear()
    stats = updater.update(2, batch)
    # now the playbook is non-empty: 4 reflections + 2 success taggings share one call
    assert [c[0] for c in model.calls] == [6, 4]
    assert stats["context/tagging_requests"] == 2
    cfg = ContextConfig()
    assert model.calls[0][1:] == (cfg.reflection_max_new_tokens, cfg.reflection_temperature)
    assert model.calls[1][1:] == (cfg.curation_max_new_tokens, cfg.curation_temperature)


def test_reflection_tags_and_curation_update_the_playbook():
    updater, _ = make()
    updater.update(1, [sample("a", ok=False)])
    book = updater.playbook()
    assert [e.content for e in book.entries()] == ["Edge case: reject when the tape is empty."]
    assert book.entries()[0].section == "mistakes" and book.entries()[0].created_step == 1
    assert updater.reflection("a") == "The answer to a missed an edge case, so some tests never passed."
    stats = updater.update(2, [sample("b", ok=False), sample("c", ok=True)])
    first = book.entries()[0]
    # tagged helpful once by b's reflection and once by c's success tagging, both at step 2
    assert (first.helpful, first.harmful, first.last_tagged_step) == (2, 0, 2)
    assert stats["context/tags_helpful"] == 2
    assert "[mist-00001] (helpful 2, harmful 0)" in updater.playbook_text("anything")


def test_near_duplicate_lessons_are_added_once():
    updater, _ = make(lesson="Always check the empty tape first: it is the edge case.")
    stats = updater.update(1, [sample(f"p{i}", ok=False) for i in range(3)])
    assert stats["context/added"] == 1 and stats["context/duplicates"] == 2
    stats = updater.update(2, [sample("p9", ok=False)])
    assert stats["context/added"] == 0 and len(updater.playbook()) == 1


def test_dedup_by_example_reflects_once_per_example():
    updater, model = make()
    group = [sample("a", ok=False, response=f"try {j}") for j in range(4)]
    updater.update(1, group)
    assert model.calls[0][0] == 1
    updater2, model2 = make(ContextConfig(dedup_by_example=False))
    updater2.update(1, group)
    assert model2.calls[0][0] == 4


def test_malformed_output_is_counted_never_raised_and_leaves_playbook_alone():
    updater, _ = make()
    updater.update(1, [sample("a", ok=False)])
    before = updater.playbook().render()
    updater.generate = FakeModel(garbage=True)
    stats = updater.update(2, [sample("a", ok=False), sample("b", ok=True)])
    assert stats["context/reflection_parse_failures"] == 1
    assert stats["context/tagging_parse_failures"] == 1
    assert stats["context/parse_failures"] == 2
    assert updater.playbook().render() == before
    assert updater.reflection("a") is None
    assert [(o["phase"], o["example_id"], o["text"], o["ok"]) for o in updater.last_outputs] == [
        ("reflection", "a", "lorem", False), ("success_tagging", "b", "lorem", False)]


def test_solution_buffer_and_reflection_lifecycle():
    updater, _ = make()
    updater.update(1, [sample("a", ok=False)])
    assert updater.reflection("a") is not None and updater.solution("a") is None
    updater.update(2, [sample("a", ok=True, response="the winning answer")])
    assert updater.solution("a") == "the winning answer"
    assert updater.reflection("a") is None  # r = ∅ after a success (Alg. 1)
    off = ContextUpdater(ContextConfig(), FakeModel(), seed=0, keep_solutions=False)
    off.update(1, [sample("a", ok=True)])
    assert off.solution("a") is None


def test_buffer_is_bounded():
    updater, _ = make(ContextConfig(buffer_size=2))
    updater.update(1, [sample(f"p{i}", ok=True) for i in range(3)])
    assert updater.solution("p0") is None and updater.solution("p2") is not None


def test_per_example_scope_keeps_lessons_apart():
    updater, _ = make(ContextConfig(playbook_scope="per_example"))
    updater.update(1, [sample("a", ok=False), sample("b", ok=False)])
    assert "Edge case: reject when the tape is empty." in updater.playbook_text("a")
    assert "declare every state" in updater.playbook_text("b")
    assert "declare every state" not in updater.playbook_text("a")
    assert updater.playbook_text("never-seen") == ""
    assert updater.playbook_size() == 1.0


@pytest.mark.parametrize("switch, calls", [({"reflect": False}, 0), ({"curate": False}, 1)])
def test_switches_skip_phases(switch, calls):
    model = FakeModel()
    updater = ContextUpdater(ContextConfig(), model, seed=0, **switch)
    updater.update(1, [sample("a", ok=False)])
    assert len(model.calls) == calls
    assert len(updater.playbook()) == 0


def test_success_tagging_switch():
    updater, model = make(ContextConfig(success_tagging=False))
    updater.update(1, [sample("a", ok=False)])
    model.calls.clear()
    updater.update(2, [sample("b", ok=True)])
    assert model.calls == []


def test_concise_schedule_runs_inside_update():
    cfg = ContextConfig(concise_method="prioritized", concise_every=2, max_entries=None)
    updater, _ = make(cfg)
    updater.update(1, [sample("a", ok=False)])  # adds an entry, never tagged afterwards
    stats = updater.update(2, [])  # 2nd update: frequency trigger drops the unused entry
    assert stats["context/concise_frequency"] == 1 and stats["context/removed"] == 1
    assert len(updater.playbook()) == 0


def test_limit_trigger_and_concise_after_curation():
    cfg = ContextConfig(concise_method="staleness", concise_every=0, max_entries=2, concise_after_curation=True)
    updater, _ = make(cfg)
    stats = updater.update(1, [sample(f"p{i}", ok=False) for i in range(4)])
    assert stats["context/added"] == 4 and len(updater.playbook()) == 2
    assert stats["context/removed"] == 2


def test_state_dict_round_trip_resumes_identically():
    updater, _ = make()
    updater.update(1, [sample("a", ok=False), sample("b", ok=True)])
    updater.update(2, [sample("c", ok=False)])
    state = json.loads(json.dumps(updater.state_dict()))
    resumed = ContextUpdater(ContextConfig(), updater.generate, seed=0)  # same (stateful) fake model
    resumed.load_state_dict(state)
    assert resumed.playbook_text("x") == updater.playbook_text("x")
    assert resumed.reflection("c") == updater.reflection("c")
    assert resumed.solution("b") == updater.solution("b")
    assert resumed.schedule.updates_seen == 2
    batch = [sample("d", ok=False), sample("a", ok=True)]
    assert resumed.update(3, batch) == pytest.approx(updater.update(3, batch), abs=0.05)
    assert resumed.state_dict() == updater.state_dict()
    other, _ = make(ContextConfig(playbook_scope="per_example"))
    with pytest.raises(UserError, match="same scope"):
        other.load_state_dict(state)


def test_config_validation_and_generate_contract():
    with pytest.raises(UserError, match="playbook_scope"):
        ContextConfig(playbook_scope="local")
    with pytest.raises(UserError, match="concise method"):
        ContextConfig(concise_method="lru")
    assert ContextConfig(**ContextConfig().to_dict()) == ContextConfig()
    updater = ContextUpdater(ContextConfig(), lambda prompts, n, t: ["x"], seed=0)
    with pytest.raises(RuntimeError, match="2 prompts"):
        updater.update(1, [sample("a", ok=False), sample("b", ok=False)])


def test_updater_runs_with_a_real_tiny_model():
    """Real generation end to end: random text is malformed output, so it is counted, not fatal."""
    from resd.generation.engines import HFEngine, generate_fn
    from resd.models import tiny_model

    model, tokenizer = tiny_model(seed=0)
    generate = generate_fn(HFEngine(model, tokenizer, batch_size=4))
    calls = []

    def counted(prompts, max_new_tokens, temperature):
        calls.append(len(prompts))
        return generate(prompts, max_new_tokens, temperature)

    cfg = ContextConfig(reflection_max_new_tokens=12, curation_max_new_tokens=12, max_prompt_chars=300)
    updater = ContextUpdater(cfg, counted, seed=0)
    updater.playbook().add("Declare every node you branch to.", section="rules")
    stats = updater.update(1, [sample("a", ok=False), sample("b", ok=False), sample("c", ok=True)])
    assert calls[0] == 3  # two reflections + one success tagging in one batched call
    assert stats["context/reflection_requests"] == 2 and stats["context/tagging_requests"] == 1
    assert stats["context/reflections"] + stats["context/reflection_parse_failures"] == 2
    assert updater.solution("c") == "my answer"
    json.dumps(updater.state_dict())
