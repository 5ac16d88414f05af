"""Reflector, success reflector and curator: prompt builders and tolerant output parsers.

Paper §3.2–3.3: REFLECT(x, y, c, P) returns a diagnosis r and a helpful/harmful/neutral tag per
playbook entry; CURATE(P, r) returns new, non-redundant entries (ADD operations only, as in
the paper's code). The output formats are line-based so that a small model can follow them:

    DIAGNOSIS: <text>            ADD <section>: <note>
    TAGS:                        ADD <section>: <note>
    mist-00003 harmful           (or NONE)

Parsers never raise on model output: anything they cannot read becomes an empty result with
`ok=False`, which the updater counts as a parse failure. JSON answers
({"diagnosis": .., "tags": [{"id": .., "tag": ..}]}, {"operations": [{"type": "ADD", ..}]})
are accepted too, because instruction-tuned models often answer in JSON regardless.

Near-duplicates: two notes are duplicates when their normalised forms (lower-case, words only)
are equal or difflib's SequenceMatcher ratio between them is >= 0.9 (the same 0.9 threshold
ACE's optional de-duplicator uses, here on characters instead of embeddings, so that it needs
no extra model).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from resd.context.playbook import DEFAULT_SECTION, Playbook, normalize_section, one_line
from resd.context.prompt_files import fill, load_parts
from resd.envs.text import strip_reasoning
from resd.files import UnreadableFile, loads_bounded

Messages = list[dict[str, str]]

DEFAULT_SECTIONS: tuple[str, ...] = ("rules", "strategies", "mistakes", "format", "general")
"""Sections the curator may use; anything else is filed under 'general'."""

EMPTY_PLAYBOOK_TEXT = "(no notes yet)"
DUPLICATE_THRESHOLD = 0.9


# ---------------------------------------------------------------------------------------------
# Text helpers
# ---------------------------------------------------------------------------------------------
def shorten_middle(text: str, max_chars: int) -> str:
    """Keep the head and tail of `text` within `max_chars`, saying how much was cut."""
    if max_chars <= 0:
        return ""
    if len(text) <= max_chars:
        return text
    marker = f"\n[... {len(text) - max_chars} characters cut ...]\n"
    if max_chars <= len(marker) + 8:
        return text[:max_chars]
    keep = max_chars - len(marker)
    head = (keep * 2) // 3  # the start of an answer usually says more than the middle
    return text[:head] + marker + text[len(text) - (keep - head):]


def normalize_for_dedup(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def is_near_duplicate(a: str, b: str, threshold: float = DUPLICATE_THRESHOLD) -> bool:
    """Exact match after normalisation, or difflib ratio >= threshold."""
    na, nb = normalize_for_dedup(a), normalize_for_dedup(b)
    if na == nb:
        return True
    matcher = difflib.SequenceMatcher(None, na, nb, autojunk=False)
    # The cheap upper bounds skip most comparisons in a large playbook.
    if matcher.real_quick_ratio() < threshold or matcher.quick_ratio() < threshold:
        return False
    return matcher.ratio() >= threshold


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = normalize_for_dedup(text).split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def is_echo(text: str, source: str, *, n: int = 4, threshold: float = 0.6) -> bool:
    """True when most word 4-grams of `text` occur in `source`: the model copied its prompt
    (small models often do) instead of answering it."""
    grams = _ngrams(text, n)
    if not grams or not source:
        return False
    return len(grams & _ngrams(source, n)) / len(grams) >= threshold


_STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below between
both but by can could did do does doing down during each few for from further had has have having he her here
hers him his how i if in into is it its itself just me more most my no nor not now of off on once only or other
our out over own same she should so some such than that the their them then there these they this those through
to too under until up very was we were what when where which while who whom why will with would you your yours
""".split()) - {"once"}  # "once" is also a start word the constraints task asks for
MIN_SHARED_TERMS = 2
"""Content words a reflection or playbook entry must share with what it is about (feedback, or the
task when there is no feedback) to be kept: fewer, and it is not about this failure."""


def content_words(text: str) -> set[str]:
    """Lower-cased words of 3+ letters that are not function words."""
    return {w for w in re.findall(r"[a-z][a-z0-9']{2,}", text.lower()) if w not in _STOPWORDS}


def about_the_failure(text: str, *, feedback: str, attempt: str, task: str, minimum: int = MIN_SHARED_TERMS) -> bool:
    """Whether a reflector's diagnosis (or a curated entry) talks about this failure: it shares at
    least `minimum` content words with the environment's feedback (with the task when the feedback
    is empty), and is not mostly a copy of the attempt. A small model asked to diagnose
    often writes about the task's topic instead ("Autumn leaves are a beautiful sight..." for an
    answer that broke a start-word rule) or repeats its own answer; a teacher reading that learns
    nothing about the failure (tests/fixtures/smollm2_context_answers.json)."""
    words = content_words(text)
    if not words:
        return False
    anchor = content_words(feedback) or content_words(task)
    if len(words & anchor) < min(minimum, len(anchor)):
        return False
    copied = words & content_words(attempt)
    return len(copied) < 0.6 * len(words) or len(words & content_words(feedback)) >= 3


def is_degenerate(text: str, *, n: int = 4, min_grams: int = 8, min_distinct: float = 0.5,
                  window: int = 48) -> bool:
    """True when the text loops: fewer than half of the word 4-grams are distinct, in the whole
    text or in its last `window` words (so a loop after a long varied preamble is caught early).
    Numbers count as one word ("56 of 3, 57 of 3, ..." is a loop). Greedy decoding of a small
    model often repeats itself until the token cap; such text carries no diagnosis and would only
    fill the teacher prompt."""
    words = re.sub(r"\d+", "0", normalize_for_dedup(text)).split()

    def loops(ws: list[str]) -> bool:
        grams = [tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)]
        return len(grams) >= min_grams and len(set(grams)) / len(grams) < min_distinct

    return loops(words) or (len(words) > window and loops(words[-window:]))


_PROMPT_SECTION = re.compile(r"^\W*(TASK|ATTEMPT|CHECKER FEEDBACK|PLAYBOOK NOTES|CURRENT PLAYBOOK)\s*:", re.IGNORECASE)
"""An answer that opens with one of the reflector/curator prompt's own section headers is the model
continuing the prompt, not answering it."""


def _looks_like_placeholder(text: str) -> bool:
    s = text.strip()
    return (s.startswith("<") and s.endswith(">")) or not re.search(r"[A-Za-z]", s)


def _json_payload(text: str) -> Any:
    """The JSON object in `text` (fenced or bare, from the first '{' to the last '}'), or None."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        return loads_bounded(text[start : end + 1])  # a 5,000-digit number is no payload either
    except UnreadableFile:
        return None


# ---------------------------------------------------------------------------------------------
# Parsed results
# ---------------------------------------------------------------------------------------------
@dataclass
class Reflection:
    """A parsed reflector answer. `ok` is False when nothing usable could be read."""

    diagnosis: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    ok: bool = False
    structured: bool = False
    """True when the answer followed the DIAGNOSIS/TAGS (or JSON) format; False when the
    diagnosis is the free text of an answer that ignored the format."""
    unknown_ids: int = 0
    """Tags that named an id not in the playbook (ignored)."""


@dataclass
class AddOperation:
    section: str
    content: str


@dataclass
class Curation:
    """A parsed curator answer: ADD operations (possibly none, if the model said NONE)."""

    operations: list[AddOperation] = field(default_factory=list)
    ok: bool = False


# ---------------------------------------------------------------------------------------------
# Parsers
# ---------------------------------------------------------------------------------------------
_ID = r"[A-Za-z0-9]{1,12}-\d{1,9}"
_TAG_PAIR = re.compile(rf"\[?[ \t]{{0,3}}({_ID})[ \t]{{0,3}}\]?[^A-Za-z0-9\n]{{0,12}}?(helpful|harmful|neutral)\b",
                       re.IGNORECASE)
# Patterns stay within one line and use bounded repeats, so no model output makes them slow.
_DIAG_HEADER = re.compile(r"^[^\w\n]*(?:diagnosis|reflection|analysis|explanation)\b[^\w\n]{0,10}?[:\-]",
                          re.IGNORECASE | re.MULTILINE)
_TAGS_HEADER = re.compile(r"^[^\w\n]*tags\b[^\w\n]{0,10}?(?::|$)", re.IGNORECASE | re.MULTILINE)
_NONE = re.compile(r"^[^\w\n]*(?:tags\b[^\w\n]*)?none\b", re.IGNORECASE | re.MULTILINE)


def _canonical_id(raw: str, known: set[str]) -> str | None:
    """Map what the model wrote ('MIST-3', '[mist-00003]') to a playbook id, if any."""
    raw = raw.strip("[] ").lower()
    if raw in known:
        return raw
    m = re.fullmatch(r"([a-z0-9]{1,12})-(\d{1,9})", raw)  # bounded: no 4,301-digit int() to choke on
    if m:
        padded = f"{m.group(1)}-{int(m.group(2)):05d}"
        if padded in known:
            return padded
    return None


def parse_tags(text: str, known_ids: Iterable[str]) -> tuple[dict[str, str], int]:
    """(id -> tag for known ids; the last tag given for an id wins, number of unknown ids)."""
    known = set(known_ids)
    tags: dict[str, str] = {}
    unknown = 0
    pairs: list[tuple[str, str]] = [(m.group(1), m.group(2).lower()) for m in _TAG_PAIR.finditer(text)]
    payload = _json_payload(text)
    if isinstance(payload, dict) and isinstance(payload.get("tags"), list):
        for item in payload["tags"]:
            if isinstance(item, dict) and isinstance(item.get("id"), str) and isinstance(item.get("tag"), str):
                pairs.append((item["id"], item["tag"].lower()))
    for raw_id, tag in pairs:
        if tag not in ("helpful", "harmful", "neutral"):
            continue
        entry_id = _canonical_id(raw_id, known)
        if entry_id is None:
            unknown += 1
        else:
            tags[entry_id] = tag
    return tags, unknown


def parse_reflection(text: str, known_ids: Iterable[str], *, max_chars: int = 1500,
                     source: str = "") -> Reflection:
    """Read a reflector answer. Never raises; `ok=False` when no diagnosis could be found.

    `source` is the prompt the model was given: an answer that ignores the format and mostly
    copies it is malformed, not a diagnosis."""
    if not isinstance(text, str):
        return Reflection()
    text = strip_reasoning(text)
    known = set(known_ids)
    tags, unknown = parse_tags(text, known)
    diagnosis, structured = "", False

    payload = _json_payload(text)
    if isinstance(payload, dict):
        for key in ("diagnosis", "reflection", "explanation", "analysis"):
            if isinstance(payload.get(key), str):
                diagnosis, structured = payload[key], True
                break
    header = None if diagnosis else _DIAG_HEADER.search(text)
    if header:
        rest = text[header.end():]
        tags_header = _TAGS_HEADER.search(rest)
        diagnosis = rest[: tags_header.start()] if tags_header else rest
        structured = True
    elif not diagnosis:
        # The model ignored the format: keep its prose (minus tag lines) as the diagnosis when
        # there is enough of it to be a sentence.
        tags_header = _TAGS_HEADER.search(text)
        prose = text[: tags_header.start()] if tags_header else text
        prose = _TAG_PAIR.sub("", prose)
        if (len(re.findall(r"[A-Za-z]{2,}", prose)) >= 4 and not is_echo(prose, source)
                and not _PROMPT_SECTION.match(prose)):
            diagnosis = prose

    diagnosis = one_line(diagnosis.replace("**", ""))
    if not diagnosis or _looks_like_placeholder(diagnosis) or is_degenerate(diagnosis):
        return Reflection(tags={}, ok=False, unknown_ids=unknown)
    if len(diagnosis) > max_chars:
        diagnosis = diagnosis[: max_chars - 3].rsplit(" ", 1)[0] + "..."
    return Reflection(diagnosis=diagnosis, tags=tags, ok=True, structured=structured, unknown_ids=unknown)


def parse_success_tags(text: str, known_ids: Iterable[str]) -> tuple[dict[str, str], bool]:
    """(tags, ok) for a success-reflector answer: ok when it tagged something or said NONE."""
    if not isinstance(text, str):
        return {}, False
    text = strip_reasoning(text)
    tags, _unknown = parse_tags(text, known_ids)
    return tags, bool(tags) or bool(_NONE.search(text))


_ADD_LINE = re.compile(r"^[\s\-\*\d\.\)#>]*ADD\b\**\s*(.*)$", re.IGNORECASE)


def _split_section(rest: str, sections: tuple[str, ...]) -> AddOperation | None:
    rest = rest.strip()
    section, content = DEFAULT_SECTION, rest
    bracket = re.match(r"^[\[(<]\s*([^\])>]{1,40})\s*[\])>]\s*[:\-|]?\s*(.*)$", rest)
    named = re.match(r"^([A-Za-z][A-Za-z &/_]{0,38}?)(?:\s*[:|]|\s+-)\s*(.+)$", rest)
    if bracket:
        section, content = bracket.group(1), bracket.group(2)
    elif rest.startswith((":", "|", "-")):
        content = rest[1:]
    elif named and normalize_section(named.group(1)) in sections:
        section, content = named.group(1), named.group(2)
    section = normalize_section(section)
    if section not in sections:
        section = DEFAULT_SECTION if DEFAULT_SECTION in sections else sections[-1]
    content = one_line(content.strip().strip('"').strip())
    if not content:
        return None
    return AddOperation(section=section, content=content)


def parse_curation(text: str, *, sections: tuple[str, ...] = DEFAULT_SECTIONS) -> Curation:
    """Read a curator answer. Never raises; `ok=False` when it has neither ADD lines nor NONE."""
    if not isinstance(text, str):
        return Curation()
    text = strip_reasoning(text)
    ops: list[AddOperation] = []
    for line in text.splitlines():
        m = _ADD_LINE.match(line)
        if m:
            op = _split_section(m.group(1), sections)
            if op:
                ops.append(op)
    if not ops:
        payload = _json_payload(text)
        items = payload.get("operations") if isinstance(payload, dict) else None
        for item in items if isinstance(items, list) else []:
            if (isinstance(item, dict) and str(item.get("type", "ADD")).upper() == "ADD"
                    and isinstance(item.get("content"), str)):
                section = normalize_section(str(item.get("section", DEFAULT_SECTION)))
                ops.append(AddOperation(section if section in sections else DEFAULT_SECTION,
                                        one_line(item["content"])))
    if ops:
        return Curation(operations=ops, ok=True)
    return Curation(operations=[], ok=bool(_NONE.search(text)))


def select_new_entries(
    operations: list[AddOperation],
    existing: Iterable[str],
    *,
    max_new: int | None = 3,
    max_chars: int = 300,
    min_words: int = 3,
    threshold: float = DUPLICATE_THRESHOLD,
) -> tuple[list[AddOperation], int, int]:
    """Keep operations worth adding: (accepted, duplicates, rejected as too short/placeholder).

    An operation is dropped when it is an exact or near duplicate of an existing entry or of an
    operation accepted before it. Overlong notes are cut at a word boundary to `max_chars`.
    """
    pool = list(existing)
    accepted: list[AddOperation] = []
    duplicates = rejected = 0
    for op in operations:
        content = op.content
        if len(content) > max_chars:
            content = content[: max_chars - 3].rsplit(" ", 1)[0] + "..."
        if _looks_like_placeholder(content) or len(re.findall(r"[A-Za-z0-9]+", content)) < min_words:
            rejected += 1
            continue
        if any(is_near_duplicate(content, other, threshold) for other in pool):
            duplicates += 1
            continue
        if max_new is not None and len(accepted) >= max_new:
            rejected += 1
            continue
        accepted.append(AddOperation(op.section, content))
        pool.append(content)
    return accepted, duplicates, rejected


# ---------------------------------------------------------------------------------------------
# Prompt builders
# ---------------------------------------------------------------------------------------------
_HEADER_LINE = re.compile(r"^([A-Z][A-Z ]{1,40})(?: \([^)\n]*\))?:[ \t]*$", re.MULTILINE)

MODEL_WRITTEN = ("response", "feedback", "reflection")
"""Values that hold model-written text: the attempt, the checker's feedback (which quotes the
program's output) and the reflection."""


def quote_forged_headers(text: str, headers: Iterable[str]) -> str:
    """`text` with every line that opens like one of the prompt's own section headers ("CHECKER
    FEEDBACK:") marked as quoted ("> "), so model-written text cannot start a section of the
    prompt it is pasted into (an attempt forging a checker report). Everything else unchanged."""
    names = sorted({h.strip().upper() for h in headers}, key=len, reverse=True)
    if not names or not text:
        return text
    forged = re.compile(r"^(?=[^\w\n]*(?:" + "|".join(re.escape(n) for n in names) + r")(?:\s*\([^)\n]*\))?\s*:)",
                        re.IGNORECASE | re.MULTILINE)
    return forged.sub("> ", text)


def _messages(template: str, values: dict[str, str]) -> Messages:
    parts = load_parts(template, required=("user",))
    headers = [m.group(1) for part in parts.values() for m in _HEADER_LINE.finditer(part)]
    values = {k: quote_forged_headers(v, headers) if k in MODEL_WRITTEN else v for k, v in values.items()}
    messages = []
    if parts.get("system", "").strip():
        messages.append({"role": "system", "content": fill(parts["system"], values)})
    messages.append({"role": "user", "content": fill(parts["user"], values)})
    return messages


def playbook_for_prompt(playbook: Playbook) -> str:
    return playbook.render() or EMPTY_PLAYBOOK_TEXT


def build_reflector_messages(
    prompt: str,
    response: str,
    feedback: str,
    playbook: Playbook,
    *,
    template: str = "reflector",
    max_prompt_chars: int = 6000,
    max_response_chars: int = 6000,
    max_feedback_chars: int = 2000,
) -> Messages:
    """Chat messages asking the student to diagnose one failed attempt (thinking stripped)."""
    answer = strip_reasoning(response) or "(the attempt has no final answer after its reasoning)"
    return _messages(template, {
        "prompt": shorten_middle(prompt, max_prompt_chars),
        "response": shorten_middle(answer, max_response_chars),
        "feedback": shorten_middle(feedback.strip() or "(the checker gave no details)", max_feedback_chars),
        "playbook": playbook_for_prompt(playbook),
    })


def build_success_reflector_messages(
    prompt: str,
    response: str,
    playbook: Playbook,
    *,
    template: str = "success_reflector",
    max_prompt_chars: int = 6000,
    max_response_chars: int = 6000,
) -> Messages:
    """Chat messages asking the student which entries a successful attempt followed."""
    return _messages(template, {
        "prompt": shorten_middle(prompt, max_prompt_chars),
        "response": shorten_middle(strip_reasoning(response), max_response_chars),
        "playbook": playbook_for_prompt(playbook),
    })


def build_curator_messages(
    prompt: str,
    reflection: str,
    playbook: Playbook,
    *,
    template: str = "curator",
    sections: tuple[str, ...] = DEFAULT_SECTIONS,
    max_prompt_chars: int = 2000,
) -> Messages:
    """Chat messages asking the student for new playbook entries from one reflection."""
    return _messages(template, {
        "prompt": shorten_middle(prompt, max_prompt_chars),
        "reflection": reflection,
        "playbook": playbook_for_prompt(playbook),
        "sections": ", ".join(sections),
    })
