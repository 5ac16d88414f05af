"""Reflector / curator prompts and their tolerant parsers (paper §3.2–3.3)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resd.context import Playbook
from resd.context.reflect import (
    AddOperation,
    build_curator_messages,
    build_reflector_messages,
    build_success_reflector_messages,
    is_degenerate,
    is_near_duplicate,
    parse_curation,
    parse_reflection,
    parse_success_tags,
    select_new_entries,
    shorten_middle,
)
from resd.errors import UserError


@pytest.fixture
def book() -> Playbook:
    b = Playbook()
    b.add("Declare every node you branch to.", section="rules")  # rule-00001
    b.add("Skip symbols that are not part of the pattern.", section="mistakes")  # mist-00002
    return b


def test_strip_reasoning_variants():
    from resd.envs.text import strip_reasoning

    assert strip_reasoning("<think>long musing</think>\nANSWER") == "ANSWER"
    assert strip_reasoning("musing opened by the template</think>ANSWER") == "ANSWER"
    assert strip_reasoning("ANSWER <think>cut off mid-thought") == "ANSWER"
    assert strip_reasoning("<THINK>a</THINK>b") == "b"
    assert strip_reasoning("<think>a</think>print('</think>')") == "print('</think>')"  # only the first closes
    assert strip_reasoning("plain") == "plain"


def test_shorten_middle_keeps_both_ends_and_budget():
    text = "HEAD" + "x" * 1000 + "TAIL"
    short = shorten_middle(text, 200)
    assert len(short) <= 200 and short.startswith("HEAD") and short.endswith("TAIL")
    assert "characters cut" in short
    assert shorten_middle("short", 200) == "short"


# ---- reflection parsing ---------------------------------------------------------------------
def test_reflection_in_the_requested_format(book):
    r = parse_reflection("DIAGNOSIS: State s0 sends G to reject.\nIt should skip it.\n"
                         "TAGS:\nrule-00001 helpful\nmist-00002 harmful\n", book.ids())
    assert r.ok and r.structured
    assert r.diagnosis == "State s0 sends G to reject. It should skip it."
    assert r.tags == {"rule-00001": "helpful", "mist-00002": "harmful"}


def test_reflection_tolerates_markdown_bad_ids_and_loose_tag_syntax(book):
    r = parse_reflection("<think>let me see</think>**Diagnosis:** Missing END node.\n\n**Tags:**\n"
                         "- [RULE-1]: Helpful\n- mist-00002 = neutral\n- fake-00077 harmful\n", book.ids())
    assert r.ok and r.diagnosis == "Missing END node."
    assert r.tags == {"rule-00001": "helpful", "mist-00002": "neutral"}
    assert r.unknown_ids == 1


def test_reflection_as_json(book):
    r = parse_reflection('```json\n{"diagnosis": "Loops forever on empty tape.", '
                         '"tags": [{"id": "rule-00001", "tag": "harmful"}]}\n```', book.ids())
    assert r.ok and r.structured and r.diagnosis == "Loops forever on empty tape."
    assert r.tags == {"rule-00001": "harmful"}


def test_reflection_free_prose_is_kept_but_marked_unstructured(book):
    r = parse_reflection("The program never rejects when the tape runs out mid-match.", book.ids())
    assert r.ok and not r.structured
    assert "mid-match" in r.diagnosis


def test_free_prose_that_copies_the_prompt_is_an_echo_not_a_diagnosis(book):
    messages = build_reflector_messages("Accept tapes that contain BRBR and reject the rest.", "START s0:",
                                        "Parse error: node end is not declared.", book)
    prompt = "\n".join(m["content"] for m in messages)
    echo = "TASK: Accept tapes that contain BRBR and reject the rest. ATTEMPT: START s0: CHECKER FEEDBACK: Parse"
    assert not parse_reflection(echo, book.ids(), source=prompt).ok
    own = "The attempt branches to a node it never declares, so the parser rejects the program."
    assert parse_reflection(own, book.ids(), source=prompt).ok


@pytest.mark.parametrize("text", ["", "   ", "DIAGNOSIS: <which part of the attempt failed>", "!!!", "ok",
                                  "<think>only thinking, never finished", None, 42])
def test_malformed_reflection_is_empty_not_an_exception(book, text):
    r = parse_reflection(text, book.ids())
    assert not r.ok and r.diagnosis == "" and r.tags == {}


def test_long_diagnosis_is_capped(book):
    r = parse_reflection("DIAGNOSIS: " + " ".join("w" + "".join(chr(97 + int(d)) for d in str(i)) for i in range(2000)), book.ids(), max_chars=100)
    assert r.ok and len(r.diagnosis) <= 100


def test_success_tags(book):
    assert parse_success_tags("TAGS:\nrule-00001 helpful", book.ids()) == ({"rule-00001": "helpful"}, True)
    assert parse_success_tags("TAGS: NONE", book.ids()) == ({}, True)
    assert parse_success_tags("I liked it.", book.ids()) == ({}, False)


# ---- curation parsing -----------------------------------------------------------------------
def test_curation_lines_in_several_styles():
    c = parse_curation("Here you go:\n1. ADD rules: Reject when the tape is empty.\n"
                       "- ADD [format] Put the program in one code block.\n"
                       "**ADD** mistakes - Do not route G to the reject node.\n"
                       "ADD: Check every branch target exists.\n"
                       "ADD Remember: colons inside a note stay in the note.\n"
                       "ADD weird section: goes to general.")
    assert c.ok
    assert [(o.section, o.content) for o in c.operations] == [
        ("rules", "Reject when the tape is empty."),
        ("format", "Put the program in one code block."),
        ("mistakes", "Do not route G to the reject node."),
        ("general", "Check every branch target exists."),
        ("general", "Remember: colons inside a note stay in the note."),
        ("general", "weird section: goes to general."),
    ]


def test_curation_json_none_and_garbage():
    c = parse_curation('{"operations": [{"type": "ADD", "section": "rules", "content": "Use END."}]}')
    assert c.ok and c.operations == [AddOperation("rules", "Use END.")]
    assert parse_curation("NONE").ok and parse_curation("NONE").operations == []
    bad = parse_curation("I think the playbook is great as it is.")
    assert not bad.ok and bad.operations == []


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_parsers_never_raise_on_arbitrary_text(text):
    ids = ["rule-00001", "mist-00002"]
    r = parse_reflection(text, ids)
    assert set(r.tags) <= set(ids)
    assert r.ok == bool(r.diagnosis)
    c = parse_curation(text)
    assert all(op.content and op.section for op in c.operations)
    tags, _ok = parse_success_tags(text, ids)
    assert set(tags) <= set(ids)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["DIAGNOSIS:", "TAGS:", "ADD", "rule-00001", "helpful", "harmful",
                                 "[", "]", ":", "\n", "{", "}", '"diagnosis"', "NONE", "**", "<think>",
                                 "</think>", "the node", " "]), max_size=40))
def test_parsers_never_raise_on_format_fragments(tokens):
    text = " ".join(tokens)
    parse_reflection(text, ["rule-00001"])
    parse_curation(text)
    parse_success_tags(text, ["rule-00001"])


# ---- duplicates -----------------------------------------------------------------------------
def test_near_duplicate_rule():
    assert is_near_duplicate("Declare every node you branch to.", "declare every node you branch to")
    assert is_near_duplicate("Declare every node you branch to.", "Declare every nodes you branch to!")
    assert not is_near_duplicate("Declare every node you branch to.", "Reject when the tape is empty.")


def test_select_new_entries_drops_duplicates_short_and_excess():
    ops = [AddOperation("rules", "declare every node you branch to"),  # dup of existing
           AddOperation("rules", "Reject when the tape is empty."),
           AddOperation("rules", "Reject when the tape is empty!"),  # dup within the batch
           AddOperation("rules", "ok"),  # too short
           AddOperation("rules", "<one-sentence note>"),  # echoed placeholder
           AddOperation("format", "Put the program in a single code block."),
           AddOperation("format", "Always end with a newline after the code block."),  # over max_new
           AddOperation("format", "A " + "very " * 200 + "long note.")]
    accepted, dups, rejected = select_new_entries(ops, ["Declare every node you branch to."], max_new=2,
                                                  max_chars=50)
    assert [o.content for o in accepted] == ["Reject when the tape is empty.",
                                             "Put the program in a single code block."]
    assert (dups, rejected) == (2, 4)


# ---- prompt builders ------------------------------------------------------------------------
def test_reflector_prompt_has_all_inputs_and_no_thinking(book):
    messages = build_reflector_messages("Accept tapes containing BRBR.", "<think>secret plan</think>START s0:",
                                        "Passed 3/10. Failed on GBRBR.", book)
    assert [m["role"] for m in messages] == ["system", "user"]
    system, user = messages[0]["content"], messages[1]["content"]
    for part in ("Accept tapes containing BRBR.", "START s0:", "Passed 3/10", "rule-00001", "mist-00002"):
        assert part in user
    # the answer format is fixed text: it sits in the system message, the prefix all reflections share
    assert "DIAGNOSIS:" in system and "TAGS:" in system
    assert "Accept tapes" not in system
    assert "secret plan" not in system + user
    empty = build_reflector_messages("t", "r", "", Playbook())[1]["content"]
    assert "(no notes yet)" in empty and "(the checker gave no details)" in empty


def test_success_and_curator_prompts(book):
    s = build_success_reflector_messages("task", "<think>x</think>answer", book)[1]["content"]
    assert "answer" in s and "rule-00001" in s and "<think>" not in s
    system, c = (m["content"] for m in build_curator_messages("task text", "It looped forever.", book,
                                                                sections=("rules", "general")))
    assert "It looped forever." in c and "mist-00002" in c
    assert "rules, general" in system and "ADD <section>" in system


def test_templates_are_overridable_from_files(tmp_path, book):
    path = tmp_path / "my_reflector.txt"
    path.write_text("my comment\n=== user ===\nWHY did {prompt} fail? {feedback} JSON stays {\"a\": 1}\n")
    messages = build_reflector_messages("T1", "R1", "F1", book, template=str(path))
    assert messages == [{"role": "user", "content": 'WHY did T1 fail? F1 JSON stays {"a": 1}'}]
    (tmp_path / "broken.txt").write_text("no parts at all")
    with pytest.raises(UserError, match="no '=== part ===' header"):
        build_reflector_messages("T", "R", "F", book, template=str(tmp_path / "broken.txt"))
    with pytest.raises(UserError, match="unknown prompt template"):
        build_reflector_messages("T", "R", "F", book, template="nope")


@pytest.mark.parametrize("text", [
    # greedy loops of a 135M model, as logged in RUN/context.jsonl
    "Reba is the most famous villain in the Star Wars universe.\n\nReba is the most famous villain in the "
    "Star Wars universe.\n\nReba is the most famous villain in the Star Wars universe.",
    "DIAGNOSIS: Lying down on the floor, a new story, lying down on the floor, a new story, lying down on "
    "the floor, a new story, lying down on the floor, a new story",
    # a loop after a long varied preamble (caught by the tail window), and a counting loop
    "The attempt wrote about holidays in general and forgot that the task asked for exactly three sentences "
    "with one number in digits, which the checker counted as missing in both places. TAGS:"
    + " <note id>" * 40,
    "DIAGNOSIS: " + " ".join(f"{i} of 3" for i in range(40, 80)),
    # continuing the prompt instead of answering it
    "TASK:\nThe new employee, who was hired last week, was very nervous on his first day.",
])
def test_looping_or_prompt_continuing_answers_are_not_diagnoses(book, text):
    assert not parse_reflection(text, book.ids()).ok


def test_a_varied_diagnosis_is_not_taken_for_a_loop(book):
    text = ("DIAGNOSIS: The answer used a comma after the first clause although the task forbids commas; "
            "a correct answer splits the clause into two sentences or joins them with 'and' instead. It "
            "also wrote 14 words where at most 12 were allowed, so shorter phrasing is needed, and the "
            "number 7 must stay in digits because the second rule checks for at least one digit.")
    assert parse_reflection(text, book.ids()).ok
    assert not is_degenerate(text)


# --- relatedness: the teacher never reads a "diagnosis" of something else ------------------------

REAL_DIAGNOSES = {
    'Start your response with the word "Once".': 'The answer starts with "1" instead of the word "Once"; '
                                                 'the first word must be Once.',
    "Write exactly 3 sentences.": "Only one sentence was written, but the task asks for exactly 3 sentences.",
    "Answer with exactly 3 bullet points": 'The answer has no bullet points: write 3 lines that each start '
                                           'with "- ".',
    'Do not use the word "is".': 'The word "is" was used once; rewrite the sentence without using it.',
}


def test_real_smollm2_answers_about_something_else_are_dropped_and_real_diagnoses_kept():
    """tests/fixtures/smollm2_context_answers.json: SmolLM2-135M's raw reflector and curator
    answers on failed `constraints` attempts (recorded 2026-11-29, greedy). Most that parse are
    about the topic ("The game of chess is played by two players...") or repeat the attempt."""
    import json
    from pathlib import Path

    from resd.context.reflect import about_the_failure, parse_reflection

    records = json.loads((Path(__file__).parent / "fixtures" / "smollm2_context_answers.json").read_text())
    parsed = [(r, parse_reflection(r["answer"], [], source=r["task"] + r["attempt"]))
              for r in records if r["phase"] == "reflection"]
    parsed = [(r, p) for r, p in parsed if p.ok]
    assert len(parsed) >= 8
    kept = [p.diagnosis for r, p in parsed
            if about_the_failure(p.diagnosis, feedback=r["feedback"], attempt=r["attempt"], task=r["task"])]
    assert len(kept) <= 1, kept  # one echo that happens to mention the start word slips through
    for record in records:
        for rule, diagnosis in REAL_DIAGNOSES.items():
            if rule in record["task"] and record["phase"] == "reflection":
                assert about_the_failure(diagnosis, feedback=record["feedback"], attempt=record["attempt"],
                                         task=record["task"]), (rule, diagnosis)
