"""Reading a model's answer out of its completion: the reasoning cut off, the code block found.

Every function here is linear in the completion's length whatever it holds (a policy writes
100 KB of unclosed `<think>` tags as readily as anything else) and never raises.
"""

from __future__ import annotations

import re

MAX_COMPLETION_CHARS = 200_000
"""Judges refuse longer completions (reward 0) instead of parsing them."""

_OPEN, _CLOSE = "<think>", "</think>"
# A fence line: optional indentation, three or more backticks, an optional language tag.
_FENCE_LINE = re.compile(r"^[ \t]{0,3}(`{3,})[ \t]*([A-Za-z0-9_+-]*)[ \t]*$")


def _first_tag_outside_code(lowered: str, tag: str) -> int:
    """Where `tag` first occurs outside a fenced code block that closes, or -1. A fence is a line
    of its own (see `fenced_blocks`); a tag inside a block that later closes is program text (a
    string literal holding "</think>"), while one inside a block that never closes still counts
    (reasoning cut off mid-draft). Linear: one pass over the lines."""
    if tag not in lowered:
        return -1
    position, open_ticks, pending = 0, 0, -1  # pending: first tag inside the open block
    for line in lowered.split("\n"):
        m = _FENCE_LINE.match(line)
        if open_ticks == 0:
            if m:
                open_ticks, pending = len(m.group(1)), -1
            else:
                found = line.find(tag)
                if found >= 0:
                    return position + found
        elif m and not m.group(2) and len(m.group(1)) >= open_ticks:
            open_ticks, pending = 0, -1
        elif pending < 0 and (found := line.find(tag)) >= 0:
            pending = position + found
        position += len(line) + 1
    return pending


def strip_reasoning(text: str) -> str:
    """The answer part of a completion: what follows the first `</think>` (the model's reasoning
    comes first; chat templates may open the block in the prompt, so the opening tag is optional).
    With an opening `<think>` and no closing one the reasoning never ended, so there is no answer
    (only what came before the tag). Later `</think>` strings, say in a program, are kept, and so
    are tags inside a fenced code block that closes (a program printing "</think>" is code, not
    the end of the reasoning)."""
    if not isinstance(text, str):
        return ""
    lowered = text.lower()
    if len(lowered) != len(text):  # lower() changed a length (e.g. "İ"): positions must match
        lowered = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    close = _first_tag_outside_code(lowered, _CLOSE)
    if close < 0:
        opened = _first_tag_outside_code(lowered, _OPEN)
        return (text[:opened] if opened >= 0 else text).strip()
    return text[close + len(_CLOSE):].strip()


_TERMINAL_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"          # CSI: colours, cursor moves, screen clears
    r"|(?:\x1b[\]PX^_]|[\x9d\x90\x98\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC/DCS/...: titles, links
    r"|\x1b[ -/]*[0-~]?")                           # any other escape
_INVISIBLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` made safe to show a person on a terminal or in a log: terminal escape sequences
    (ANSI colours, cursor moves, OSC titles and links) removed, carriage returns turned into line
    breaks (so nothing printed earlier on a line can be overwritten), and every other control
    character and bidirectional override dropped; tabs and line breaks stay. Linear."""
    if not isinstance(text, str):
        return ""
    text = _TERMINAL_SEQUENCE.sub("", text).replace("\r\n", "\n").replace("\r", "\n")
    return _INVISIBLE.sub("", text)


def fenced_blocks(text: str) -> list[tuple[str, str, bool]]:
    """(language, body, closed) of every fenced code block, in order. A fence closes only on a
    line of its own with at least as many backticks as opened it, so backticks inside the code
    (a string holding three backticks) do not end it; an unclosed last block runs to the end."""
    blocks: list[tuple[str, str, bool]] = []
    open_ticks, lang, body = 0, "", []  # 0: outside a block
    for line in text.split("\n"):
        m = _FENCE_LINE.match(line)
        if open_ticks == 0:
            if m:
                open_ticks, lang, body = len(m.group(1)), m.group(2).lower(), []
        elif m and not m.group(2) and len(m.group(1)) >= open_ticks:
            blocks.append((lang, "\n".join(body) + "\n", True))
            open_ticks = 0
        else:
            body.append(line)
    if open_ticks:
        blocks.append((lang, "\n".join(body) + ("\n" if body else ""), False))
    return blocks


PYTHON_TAGS = ("python", "py", "python3")


def extract_python(completion: str, *, allow_unclosed: bool = True) -> str | None:
    """The program in a completion: after the reasoning, the last non-empty ```python block (an
    unclosed last block counts when `allow_unclosed`, as generation may stop at the token limit),
    else the last untagged ``` block; None if neither."""
    answer = strip_reasoning(completion)
    blocks = [(lang, body) for lang, body, closed in fenced_blocks(answer) if closed or allow_unclosed]
    for wanted in (PYTHON_TAGS, ("",)):
        bodies = [body for lang, body in blocks if lang in wanted and body.strip()]
        if bodies:
            return bodies[-1]
    return None
