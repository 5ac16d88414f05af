"""ROSD's first-error reflector (SPEC §3; arXiv 2605.28014), in our own words.

For a failed response whose group has a correct peer, the student (greedy) compares the two and
quotes the exact text where the failed response first goes wrong, plus a short explanation. The
quote is located in the response (resd.distill.masks) and distillation runs from that token to
the end; the explanation goes into the teacher prompt's reflection slot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PROMPT = """You will compare two answers to the same task and find the first mistake.

## Task
{task}

## An answer that passed
{correct}

## An answer that failed
{wrong}

## What the checker said about the failed answer
{feedback}

Find the earliest place where the failed answer goes wrong. Do not solve the task again.
Reply in exactly this format:
<first_error>copy the exact words of the failed answer where it first goes wrong</first_error>
<why>one or two sentences: what is wrong there and what should be done instead</why>"""

_QUOTE = re.compile(r"<first_error>(.*?)</first_error>", re.DOTALL | re.IGNORECASE)
_WHY = re.compile(r"<why>(.*?)(?:</why>|$)", re.DOTALL | re.IGNORECASE)


@dataclass
class ErrorReflection:
    quote: str | None
    explanation: str | None


def reflector_prompt(task: str, correct: str, wrong: str, feedback: str) -> str:
    return _PROMPT.format(task=task.strip(), correct=correct.strip(), wrong=wrong.strip(),
                          feedback=feedback.strip() or "(no feedback)")


def parse_reflection(text: str) -> ErrorReflection:
    """Tolerant: a missing tag gives None for that part, never an exception."""
    quote = _QUOTE.search(text or "")
    why = _WHY.search(text or "")
    q = quote.group(1).strip() if quote else None
    w = why.group(1).strip() if why else None
    return ErrorReflection(quote=q or None, explanation=w or None)
