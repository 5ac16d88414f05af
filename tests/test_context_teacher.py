"""Teacher prompts: templates, slot switches (paper Table 3 ablations), SDPO/ROSD variants and
fitting a token budget without cutting the instruction or the assistant header."""

from __future__ import annotations

import re

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from pathlib import Path

import resd.context
from resd.context import TeacherContext, TeacherSlots, teacher_messages
from resd.errors import UserError

TEMPLATES = Path(resd.context.__file__).parent / "templates"


def build_teacher_messages(template, task, slots=TeacherSlots(), **values):
    return teacher_messages(template, task, TeacherContext(distill=True, **values), slots)

TASK = [{"role": "system", "content": "You build factories."},
        {"role": "user", "content": "Accept tapes that contain BRBR."}]
CONTEXT = dict(playbook="[rule-00001] (helpful 1, harmful 0) Declare every node.",
               previous_trial="<think>hmm</think>START s0: NEXT s1",
               feedback="Passed 3/10 tests.", reflection="s1 is never declared.",
               solution="START s0: NEXT end END end")
MARKERS = {"playbook": "Declare every node.", "previous_trial": "START s0: NEXT s1",
           "feedback": "Passed 3/10 tests.", "reflection": "s1 is never declared.",
           "solution": "START s0: NEXT end END end"}


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer with a ChatML-style template, built in code (one token per word)."""
    corpus = " ".join([*(p.read_text() for p in TEMPLATES.glob("*.txt")), *MARKERS.values(),
                       *(m["content"] for m in TASK)])
    words = sorted(set(re.findall(r"\w+|[^\w\s]+", corpus + " system user assistant filler x characters cut")))
    vocab = {"[UNK]": 0, "<|im_start|>": 1, "<|im_end|>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return tok


def user_text(messages) -> str:
    return messages[-1]["content"]


def test_resd_template_shows_every_slot_keeps_system_and_ends_with_instruction():
    messages = build_teacher_messages("resd", TASK, **CONTEXT)
    assert messages[0] == TASK[0]
    text = user_text(messages)
    assert text.startswith("Accept tapes that contain BRBR.")
    for marker in MARKERS.values():
        assert marker in text
    assert "hmm" not in text  # thinking stripped from the previous trial
    assert text.rstrip().endswith("correct answer to the original task.")
    assert all(messages.values.values())


@pytest.mark.parametrize("slot", list(MARKERS))
def test_each_slot_can_be_switched_off(slot):
    full = user_text(build_teacher_messages("resd", TASK, **CONTEXT))
    off = user_text(build_teacher_messages("resd", TASK, **CONTEXT, slots=TeacherSlots(**{slot: False})))
    assert MARKERS[slot] not in off
    others = [m for s, m in MARKERS.items() if s != slot]
    assert all(m in off for m in others)
    assert "\n\n\n" not in off and off.count("\n") < full.count("\n")


def test_empty_slots_vanish_and_no_slot_means_no_extra_context():
    messages = build_teacher_messages("resd", TASK, playbook="", previous_trial=None, feedback=None,
                                      reflection=None, solution=None)
    assert not any(messages.values.values())
    assert "Lessons collected" not in user_text(messages)
    assert user_text(messages).startswith("Accept tapes that contain BRBR.\n\nUse the notes")


def test_sdpo_template_uses_solution_and_feedback_only():
    text = user_text(build_teacher_messages("sdpo", TASK, **CONTEXT))
    assert MARKERS["solution"] in text and MARKERS["feedback"] in text
    assert MARKERS["playbook"] not in text and MARKERS["reflection"] not in text
    assert MARKERS["previous_trial"] not in text
    assert text.index(MARKERS["solution"]) < text.index(MARKERS["feedback"])
    assert text.rstrip().endswith("Now solve the original task correctly.")
    assert build_teacher_messages("sdpo-ss", TASK, **CONTEXT) == build_teacher_messages("sdpo", TASK, **CONTEXT)
    no_peer = build_teacher_messages("sdpo", TASK, **{**CONTEXT, "solution": None, "feedback": None})
    assert not any(no_peer.values.values())
    assert TeacherSlots().restricted_to("sdpo").on() == ["feedback", "solution"]
    assert TeacherSlots(feedback=False).restricted_to("rosd").on() == ["reflection", "solution"]


def test_rosd_template_carries_the_explanation():
    text = user_text(build_teacher_messages("rosd", TASK, **CONTEXT))
    assert MARKERS["reflection"] in text and MARKERS["solution"] in text
    assert MARKERS["playbook"] not in text


@pytest.mark.parametrize("name", ["resd-manufactoria", "resd-bouncingsim", "resd-finer"])
def test_task_templates_render(name):
    text = user_text(build_teacher_messages(name, TASK, **CONTEXT))
    assert all(m in text for m in MARKERS.values())


def test_user_template_file_and_errors(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("=== main ===\nQ: {prompt}\n{feedback}\nFix it.\n=== feedback ===\nFB<{content}>\n")
    assert user_text(build_teacher_messages(str(path), TASK, **CONTEXT)) == \
        "Q: Accept tapes that contain BRBR.\nFB<Passed 3/10 tests.>\nFix it."
    (tmp_path / "noprompt.txt").write_text("=== main ===\nno slot\n")
    with pytest.raises(UserError, match="must contain {prompt}"):
        build_teacher_messages(str(tmp_path / "noprompt.txt"), TASK, **CONTEXT)
    with pytest.raises(UserError, match="unknown prompt template"):
        build_teacher_messages("no-such-template", TASK, **CONTEXT)
    with pytest.raises(UserError, match="no user message"):
        build_teacher_messages("resd", [{"role": "system", "content": "x"}], **CONTEXT)


def test_earlier_turns_are_kept_and_only_the_last_user_turn_rewritten():
    task = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "reply"},
            {"role": "user", "content": "second"}]
    messages = build_teacher_messages("resd", task, **CONTEXT)
    assert messages[:2] == task[:2] and user_text(messages).startswith("second")
