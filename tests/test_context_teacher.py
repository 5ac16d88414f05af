"""Teacher prompts: templates, slot switches (paper Table 3 ablations), SDPO/ROSD variants and
fitting a token budget without cutting the instruction or the assistant header."""

from __future__ import annotations

import re

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from resd.context import TeacherSlots, build_teacher_messages, fit_teacher_prompt, peer_solution
from resd.context.prompt_files import read_template
from resd.context.teacher_prompt import TEMPLATE_NAMES
from resd.errors import UserError

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
    corpus = " ".join([*(read_template(n) for n in TEMPLATE_NAMES), *MARKERS.values(), *(m["content"] for m in TASK)])
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
    assert messages.has_extra_context


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
    assert not messages.has_extra_context
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
    assert not no_peer.has_extra_context


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
    with pytest.raises(UserError, match="unknown teacher slot"):
        TeacherSlots.from_dict({"memory": False})


def test_earlier_turns_are_kept_and_only_the_last_user_turn_rewritten():
    task = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "reply"},
            {"role": "user", "content": "second"}]
    messages = build_teacher_messages("resd", task, **CONTEXT)
    assert messages[:2] == task[:2] and user_text(messages).startswith("second")


def test_peer_solution_never_own_unless_self_success_allowed():
    assert peer_solution(["a", "b", "c"], [True, False, True], 0) == "c"
    assert peer_solution(["a", "b"], [True, False], 0) is None
    assert peer_solution(["a", "b"], [True, False], 0, allow_self=True) == "a"
    assert peer_solution(["a", "b"], [True, False], 1) == "a"


# ---- token budget ---------------------------------------------------------------------------
def assistant_header(tokenizer) -> list[int]:
    return tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]


def test_fit_without_truncation(tokenizer):
    messages = build_teacher_messages("resd", TASK, **CONTEXT)
    ids, stats = fit_teacher_prompt(tokenizer, messages, 10_000)
    assert stats["teacher/truncated"] == 0 and stats["teacher/prompt_tokens"] == len(ids)
    assert ids[-len(assistant_header(tokenizer)):] == assistant_header(tokenizer)


def test_fit_shortens_the_longest_slot_and_keeps_instruction_and_header(tokenizer):
    long_trial = "START s0: " + " ".join(["filler"] * 3000) + " NEXT s1"
    messages = build_teacher_messages("resd", TASK, **{**CONTEXT, "previous_trial": long_trial})
    full_ids, _ = fit_teacher_prompt(tokenizer, messages, 100_000)
    ids, stats = fit_teacher_prompt(tokenizer, messages, 400)
    assert len(full_ids) > 3000 and len(ids) <= 400
    assert stats["teacher/truncated"] == 1 and stats["teacher/prompt_tokens"] == len(ids)
    assert stats["teacher/cut_chars"] > 0
    assert ids[-len(assistant_header(tokenizer)):] == assistant_header(tokenizer)
    decoded = tokenizer.decode(ids)
    assert "original task" in decoded  # instruction intact
    assert "You build factories" in decoded  # system message intact
    for short in ("Declare every node", "never declared", "Passed 3 / 10 tests"):
        assert short in decoded  # the short slots were not touched
    assert "characters cut" in decoded  # the long slot says it was shortened


def test_fit_refuses_when_even_the_frame_does_not_fit(tokenizer):
    messages = build_teacher_messages("resd", TASK, **CONTEXT)
    with pytest.raises(UserError, match="raise the teacher prompt budget"):
        fit_teacher_prompt(tokenizer, messages, 20)


def test_fit_plain_messages_cuts_the_longest_non_system_message(tokenizer):
    plain = [{"role": "system", "content": "You build factories."},
             {"role": "user", "content": "Accept " + " ".join(["filler"] * 2000) + " tapes."}]
    ids, stats = fit_teacher_prompt(tokenizer, plain, 300)
    assert len(ids) <= 300 and stats["teacher/truncated"] == 1
    assert "You build factories" in tokenizer.decode(ids)
