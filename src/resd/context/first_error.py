"""ROSD's first-error reflector (arXiv 2605.28014): prompt and tolerant parser, in our own words.

For a failed response whose group has a correct peer, the student (greedy) compares the two and
quotes the exact text where the failed response first goes wrong, plus a short explanation. The
engine (`resd.context.engine.FirstErrorContext`) locates the quote in the response
(`resd.distill.masks.locate_error_token`) and distillation runs from that token to the end; the
explanation goes into the teacher prompt's reflection slot. The prompt is the editable template
file `templates/rosd_reflector.txt`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from resd.context.prompt_files import fill, load_parts

TEMPLATE = "rosd_reflector"

_QUOTE = re.compile(r"<first_error>(.*?)</first_error>", re.DOTALL | re.IGNORECASE)
_WHY = re.compile(r"<why>(.*?)(?:</why>|$)", re.DOTALL | re.IGNORECASE)


@dataclass
class FirstError:
    quote: str | None
    explanation: str | None


def build_first_error_messages(task: str, correct: str, wrong: str, feedback: str,
                               template: str = TEMPLATE) -> list[dict[str, str]]:
    """One user message asking where `wrong` first goes wrong, with `correct` to compare against."""
    parts = load_parts(template, required=("user",))
    values = {"task": task.strip(), "correct": correct.strip(), "wrong": wrong.strip(),
              "feedback": feedback.strip() or "(no feedback)"}
    return [{"role": "user", "content": fill(parts["user"], values)}]


def parse_first_error(text: str) -> FirstError:
    """Tolerant: a missing tag gives None for that part, never an exception."""
    if not isinstance(text, str):
        return FirstError(None, None)
    quote = _QUOTE.search(text)
    why = _WHY.search(text)
    q = quote.group(1).strip() if quote else None
    w = why.group(1).strip() if why else None
    return FirstError(quote=q or None, explanation=w or None)
