"""Teacher prompts: the privileged context the self-teacher reads before the student's response.

A teacher template (resd/context/templates/*.txt, or a user's file) has a `main` part that
replaces the task's last user message and one part per slot (`resd.context.slots.SLOT_NAMES`,
paper §3.3, Alg. 1 line 15). A slot appears only when it is switched on in `TeacherSlots` and
has content, which is how the paper's ablations (Table 3: w/o reflection, w/o playbook, w/o
solution buffer) are run.

`fit_teacher_prompt` tokenizes with the chat template and, when the prompt is over budget,
shortens the longest slot first (then the next longest, ...), never the instruction, the system
messages or the assistant header; its stats say whether it had to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from resd.context.prompt_files import fill, fill_dropping_empty, load_parts, placeholders
from resd.context.reflect import shorten_middle
from resd.context.slots import SLOT_FIELDS, SLOT_NAMES, TeacherContext, TeacherSlots
from resd.envs.text import strip_reasoning
from resd.errors import UserError

# SDPO+ss differs from SDPO only in which solution fills the slot (the engine's
# `dont_reprompt_on_self_success`), not in the template.
TEMPLATE_ALIASES = {"sdpo-ss": "sdpo", "sdpo+ss": "sdpo"}


@dataclass(frozen=True)
class TeacherTemplate:
    name: str
    main: str
    wrappers: dict[str, str]  # slot -> text with {content}

    @classmethod
    def load(cls, name_or_path: str) -> "TeacherTemplate":
        key = TEMPLATE_ALIASES.get(name_or_path, name_or_path)
        parts = load_parts(key, required=("main",))
        main = parts["main"]
        if "prompt" not in placeholders(main):
            raise UserError(f"teacher template {name_or_path!r}: its main part must contain {{prompt}}")
        wrappers = {slot: parts.get(slot, "{content}") for slot in SLOT_NAMES}
        return cls(name=name_or_path, main=main, wrappers=wrappers)

    def uses(self, slot: str) -> bool:
        return slot in placeholders(self.main)

    def render(self, prompt: str, values: dict[str, str]) -> str:
        """The user turn: main with each non-empty slot wrapped by its part."""
        blocks = {slot: fill(self.wrappers[slot], {"content": values[slot]}) if values.get(slot) else ""
                  for slot in SLOT_NAMES}
        return fill_dropping_empty(self.main, {**blocks, "prompt": prompt})


class TeacherMessages(list):
    """Chat messages for the teacher (a plain list of dicts to every consumer), remembering
    how the rewritten user turn was built so that `fit_teacher_prompt` can shorten slots."""

    def __init__(self, messages: list[dict[str, str]], *, template: TeacherTemplate, index: int,
                 prompt: str, values: dict[str, str]) -> None:
        super().__init__(messages)
        self.template = template
        self.index = index  # position of the rewritten user turn
        self.prompt = prompt
        self.values = values  # slot -> text actually shown ("" when off or empty)

    def with_values(self, prompt: str, values: dict[str, str]) -> "TeacherMessages":
        messages = [dict(m) for m in self]
        messages[self.index] = {**messages[self.index], "content": self.template.render(prompt, values)}
        return TeacherMessages(messages, template=self.template, index=self.index, prompt=prompt, values=values)


def teacher_messages(template: str, task_messages: Sequence[dict[str, str]], context: TeacherContext,
                     slots: TeacherSlots = TeacherSlots()) -> TeacherMessages:
    """The teacher's chat messages for one sample: the task's messages with the last user turn
    rewritten to hold the slots its `TeacherContext` fills.

    System messages and earlier turns are kept unchanged. Slots that are switched off in `slots`,
    empty, or absent from the template are left out. Thinking blocks are stripped from the slots
    that hold answers (`slot(strip_reasoning=True)`: the previous trial and the solution).
    """
    tpl = TeacherTemplate.load(template)
    index = max((i for i, m in enumerate(task_messages) if m.get("role") == "user"), default=-1)
    if index < 0:
        raise UserError("the task has no user message to build a teacher prompt from")
    values = {}
    for f in SLOT_FIELDS:
        text = getattr(context, f.name)
        if text and f.metadata["strip_reasoning"]:
            text = strip_reasoning(text)
        values[f.name] = (text or "").strip() if getattr(slots, f.name) and tpl.uses(f.name) else ""
    prompt = task_messages[index].get("content", "")
    messages = [dict(m) for m in task_messages]
    messages[index] = {"role": "user", "content": tpl.render(prompt, values)}
    return TeacherMessages(messages, template=tpl, index=index, prompt=prompt, values=values)


# ---------------------------------------------------------------------------------------------
# Tokenizing within a budget
# ---------------------------------------------------------------------------------------------
def chat_text(tokenizer: Any, messages: Sequence[dict[str, str]]) -> str:
    """Render messages with the tokenizer's chat template and the assistant header.

    Tokenizers without a chat template (some base models) get a plain role-prefixed layout.
    """
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=True)
    return "".join(f"{m['role']}: {m['content']}\n\n" for m in plain) + "assistant: "


def _encode(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[int]:
    # The rendered template already holds every special token it wants.
    return list(tokenizer(chat_text(tokenizer, messages), add_special_tokens=False)["input_ids"])


_MIN_SLOT_CHARS = 64


def fit_teacher_prompt(tokenizer: Any, messages: Sequence[dict[str, str]], max_tokens: int
                       ) -> tuple[list[int], dict[str, float]]:
    """Token ids of the chat-templated teacher prompt (with the assistant header), at most
    `max_tokens` long when that is possible by shortening slots.

    For `TeacherMessages` the longest slot (prompt included) is cut in its middle first; a slot
    that would fall under 64 characters is dropped whole. For a plain message list, the longest
    non-system message is cut in its middle. Raises UserError when even the empty frame
    (instruction, system messages, template) does not fit.

    Stats: {"teacher/truncated": 0 or 1, "teacher/prompt_tokens": n, "teacher/cut_chars": c}.
    """
    if max_tokens < 1:
        raise UserError(f"max teacher prompt tokens must be >= 1 (got {max_tokens})")
    ids = _encode(tokenizer, messages)
    stats = {"teacher/truncated": 0.0, "teacher/prompt_tokens": float(len(ids)), "teacher/cut_chars": 0.0}
    if len(ids) <= max_tokens:
        return ids, stats

    if isinstance(messages, TeacherMessages):
        texts = {"prompt": messages.prompt, **messages.values}

        def rebuild(t: dict[str, str]) -> list[dict[str, str]]:
            return messages.with_values(t["prompt"], {k: v for k, v in t.items() if k != "prompt"})
    else:
        texts = {str(i): m["content"] for i, m in enumerate(messages) if m.get("role") != "system"}

        def rebuild(t: dict[str, str]) -> list[dict[str, str]]:
            return [{**m, "content": t.get(str(i), m["content"])} for i, m in enumerate(messages)]

    originals = dict(texts)
    limits = {k: len(v) for k, v in texts.items()}  # characters each text may keep
    for _ in range(64):
        excess = len(ids) - max_tokens
        if excess <= 0:
            break
        name = max(limits, key=lambda k: limits[k])
        if limits[name] == 0:
            break
        total_chars = sum(len(m["content"]) for m in rebuild(texts))
        chars_per_token = max(1.0, total_chars / max(1, len(ids)))
        target = limits[name] - int(excess * chars_per_token * 1.1) - 16
        # Always cut from the original text, so markers never nest.
        limits[name] = target if target >= _MIN_SLOT_CHARS else 0
        texts[name] = shorten_middle(originals[name], limits[name])
        ids = _encode(tokenizer, rebuild(texts))
    if len(ids) > max_tokens:
        raise UserError(f"the teacher prompt needs {len(ids)} tokens even with its slots shortened; "
                        f"raise the teacher prompt budget above {max_tokens} tokens or shorten the "
                        f"template's instruction/system prompt")
    stats.update({"teacher/truncated": 1.0, "teacher/prompt_tokens": float(len(ids)),
                  "teacher/cut_chars": float(sum(len(v) for v in originals.values())
                                                  - sum(len(v) for v in texts.values()))})
    return ids, stats
