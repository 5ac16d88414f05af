"""Every rule of the Manufactoria language, each checked on a hand-traced program."""

from __future__ import annotations

import re

import pytest

from resd.envs.manufactoria import MAX_STEPS, ParseError, Program, parse, run
from resd.envs.manufactoria.env import manual_text


def prog(*lines: str) -> str:
    return "\n".join(lines) + "\n"


# Reads one symbol of any colour at `rb` and reports which branch it took via the next node's id.
CLASSIFY_RB = prog(
    "START start:",
    "    NEXT rb",
    "PULLER_RB rb:",
    "    [R] saw_r",
    "    [B] saw_b",
    "    [EMPTY] saw_empty",
    "PAINTER_RED saw_r:",
    "    NEXT end",
    "PAINTER_BLUE saw_b:",
    "    NEXT end",
    "PAINTER_GREEN saw_empty:",
    "    NEXT end",
    "END end",
)

CLASSIFY_YG = prog(
    "START start:",
    "    NEXT yg",
    "PULLER_YG yg:",
    "    [Y] saw_y",
    "    [G] saw_g",
    "    [EMPTY] saw_empty",
    "PAINTER_YELLOW saw_y:",
    "    NEXT end",
    "PAINTER_GREEN saw_g:",
    "    NEXT end",
    "PAINTER_RED saw_empty:",
    "    NEXT end",
    "END end",
)


# --------------------------------------------------------------------------- pullers

@pytest.mark.parametrize("tape, branch_node, final_tape", [
    ("RBY", "saw_r", "BYR"),       # R removed, painter appends R
    ("BRR", "saw_b", "RRB"),       # B removed, painter appends B
    ("", "saw_empty", "G"),        # empty tape -> [EMPTY]
    ("YR", "saw_empty", "YRG"),    # Y is not RB's colour: [EMPTY], nothing removed
    ("GGB", "saw_empty", "GGBG"),  # same for G
])
def test_puller_rb_reads_front_and_only_consumes_its_colours(tape, branch_node, final_tape):
    result = run(CLASSIFY_RB, tape)
    assert result.accepted and result.error is None
    assert result.trace == ["start", "rb", branch_node, "end"]
    assert result.tape == final_tape


@pytest.mark.parametrize("tape, branch_node, final_tape", [
    ("YB", "saw_y", "BY"),
    ("GR", "saw_g", "RG"),
    ("", "saw_empty", "R"),
    ("RY", "saw_empty", "RYR"),    # R at a YG puller: [EMPTY] without consuming
    ("B", "saw_empty", "BR"),
])
def test_puller_yg_reads_front_and_only_consumes_its_colours(tape, branch_node, final_tape):
    result = run(CLASSIFY_YG, tape)
    assert result.accepted
    assert result.trace == ["start", "yg", branch_node, "end"]
    assert result.tape == final_tape


def test_missing_branch_rejects_like_none():
    program = prog("START start:", "    NEXT a", "PULLER_RB a:", "    [R] end", "END end")
    assert run(program, "R").accepted
    result = run(program, "B")
    assert not result.accepted and result.error == "routed to NONE" and result.error_kind == "runtime"
    assert result.trace == ["start", "a", "NONE"] and result.tape == ""  # the B was pulled before routing
    empty = run(program, "")
    assert not empty.accepted and empty.trace == ["start", "a", "NONE"]


def test_explicit_none_rejects():
    program = prog("START start:", "    NEXT a", "PULLER_RB a:", "    [R] end", "    [B] NONE", "END end")
    result = run(program, "BR")
    assert not result.accepted and result.error == "routed to NONE"
    assert result.trace == ["start", "a", "NONE"] and result.tape == "R"


def test_a_branch_given_twice_follows_its_first_route():
    program = prog("START start:", "    NEXT a", "PULLER_RB a:", "    [R] NONE", "    [R] end", "    [B] end",
                   "    [B] NONE", "END end")
    assert not run(program, "R").accepted
    assert run(program, "B").accepted


# --------------------------------------------------------------------------- painters, start, end

@pytest.mark.parametrize("kind, colour", [("PAINTER_RED", "R"), ("PAINTER_BLUE", "B"),
                                          ("PAINTER_YELLOW", "Y"), ("PAINTER_GREEN", "G")])
def test_painters_append_to_the_back(kind, colour):
    program = prog("START start:", "    NEXT p", f"{kind} p:", "    NEXT q", f"{kind} q:", "    NEXT end", "END end")
    result = run(program, "RB")
    assert result.accepted and result.tape == "RB" + colour * 2
    assert result.trace == ["start", "p", "q", "end"]


def test_painted_symbols_are_read_after_the_original_tape():
    # Paint G, then pull: the original front (B) comes first, the G is read last.
    program = prog("START start:", "    NEXT paint", "PAINTER_GREEN paint:", "    NEXT rb",
                   "PULLER_RB rb:", "    [B] yg", "PULLER_YG yg:", "    [G] end", "END end")
    result = run(program, "B")
    assert result.accepted and result.tape == ""
    assert result.trace == ["start", "paint", "rb", "yg", "end"]


def test_accept_only_at_end_lowercase_end_id():
    assert run(prog("START start:", "    NEXT end", "END end"), "RBYG").accepted
    # Upper-case END as a target passes validation but is not a node at runtime.
    upper = prog("START start:", "    NEXT END", "END end")
    assert isinstance(parse(upper), Program)
    result = run(upper, "R")
    assert not result.accepted
    assert result.error_kind == "runtime" and "unknown node 'END'" in result.error
    assert result.trace == ["start", "END"]


def test_start_may_be_a_route_target():
    # start -> a; a pulls R and goes back to start; empty tape accepts.
    program = prog("START start:", "    NEXT a", "PULLER_RB a:", "    [R] start", "    [EMPTY] end", "END end")
    result = run(program, "RR")
    assert result.accepted and result.trace == ["start", "a", "start", "a", "start", "a", "end"]


# --------------------------------------------------------------------------- step limit

def test_infinite_loop_is_rejected_after_1000_visits():
    # A Y at a PULLER_RB is never consumed, so [EMPTY] -> itself spins forever.
    program = prog("START start:", "    NEXT a", "PULLER_RB a:", "    [R] a", "    [EMPTY] a", "END end")
    result = run(program, "RY")
    assert not result.accepted
    assert result.error_kind == "loop" and "infinite loop" in result.error
    assert len(result.trace) == MAX_STEPS == 1000
    assert result.trace[-1] == "a" and result.front == "Y"


def test_painter_loop_is_also_cut_off():
    program = prog("START start:", "    NEXT p", "PAINTER_RED p:", "    NEXT p", "END end")
    result = run(program, "")
    assert result.error_kind == "loop" and not result.accepted
    assert result.tape == "R" * (MAX_STEPS - 1)  # every visit but the one to `start` painted


def test_step_limit_counts_iterations_end_included():
    # start, a x (len+1), end = len + 3 iterations for a tape of R's.
    program = prog("START start:", "    NEXT a", "PULLER_RB a:", "    [R] a", "    [EMPTY] end", "END end")
    assert run(program, "RRRRR", max_steps=8).accepted
    short = run(program, "RRRRR", max_steps=7)
    assert not short.accepted and short.error_kind == "loop"


# --------------------------------------------------------------------------- syntax

def test_comments_blank_lines_tabs_and_deep_indent_are_fine():
    program = (
        "# a factory that accepts tapes starting with R\n"
        "\n"
        "START start:   # entry\n"
        "\tNEXT a\n"
        "PULLER_RB a:\n"
        "        [R] end    # eight spaces still count as indented\n"
        "    # a comment among routes\n"
        "END end  # exit\n"
    )
    assert isinstance(parse(program), Program)
    assert run(program, "RG").accepted and not run(program, "GR").accepted


def test_windows_line_endings_parse():
    assert run("START start:\r\n    NEXT end\r\nEND end\r\n", "").accepted


@pytest.mark.parametrize("text, line, fragment", [
    (prog("START start:", "    NEXT a", "PULLER_RB a", "    [R] end", "END end"), 3, "needs a colon"),
    (prog("START start:", "    NEXT a", "PULLER_RB a :", "    [R] end", "END end"), 3, "not a node declaration"),
    (prog("START start:", "    NEXT end", "END end:"), 3, "takes no colon"),
    (prog("START begin:", "    NEXT end", "END end"), 1, "must be called 'start'"),
    (prog("START start:", "    NEXT end", "END finish"), 3, "must be called 'end'"),
    (prog("START start:", "    NEXT a", "PULLER_RB a:", "    [R] end", "PULLER_YG a:", "    [Y] end", "END end"),
     5, "declared twice"),
    # 2 spaces do not make a route line: START is left with no route (checked before the next line).
    (prog("START start:", "  NEXT end", "END end"), 1, "exactly one NEXT route, it has 0"),
    (prog("START start:", "    NEXT a", "PULLER_XY a:", "    [R] end", "END end"), 3, "not a node declaration"),
    (prog("START start:", "    NEXT a", "PULLER_RB a:", "    [Y] end", "END end"), 3, "has no [Y] branch"),
    (prog("START start:", "    NEXT a", "PULLER_YG a:", "    [R] end", "END end"), 3, "has no [R] branch"),
    (prog("START start:", "    NEXT a", "PULLER_RB a:", "    [r] end", "END end"), 4, "cannot read puller route"),
    (prog("START start:", "    NEXT a", "PULLER_RB a:", "    [R] b", "END end"), 3, "'b', which is not declared"),
    (prog("START start:", "    NEXT a", "PAINTER_RED a:", "END end"), 3, "exactly one NEXT route, it has 0"),
    (prog("START start:", "    NEXT end", "    NEXT end", "END end"), 1, "exactly one NEXT route, it has 2"),
    (prog("START start:", "    NEXT end", "END end", "    NEXT start"), 4, "END node takes no routes"),
    (prog("START start:", "    GO end", "END end"), 2, "expected 'NEXT target'"),
    (prog("START start:", "    NEXT end", "END end", "hello world!"), 4, "not a node declaration"),
    # The text is trimmed first, so line 1 is the first line with code on it.
    (prog("", "", "START start:", "    NEXT a", "END end"), 1, "'a', which is not declared"),
])
def test_parse_errors_name_the_line(text, line, fragment):
    error = parse(text)
    assert isinstance(error, ParseError)
    assert error.line == line, str(error)
    assert fragment in error.message, error.message
    assert str(error).startswith(f"Line {line}:")
    result = run(text, "R")
    assert not result.accepted and result.error_kind == "parse" and f"Line {line}" in result.error


def test_declarations_indented_by_one_to_three_spaces_are_still_declarations():
    for indent in (" ", "  ", "   "):
        program = prog("START start:", "    NEXT a", f"{indent}PULLER_RB a:", "    [R] end", f"{indent}END end")
        assert run(program, "R").accepted and not run(program, "B").accepted
    # Four spaces make it a route line of the node above, which a START cannot read.
    assert isinstance(parse(prog("START start:", "    NEXT a", "    PULLER_RB a:", "    [R] end", "END end")),
                      ParseError)


def test_leading_indentation_of_the_whole_text_is_trimmed_only_on_its_first_line():
    # The first line loses its indent when the text is trimmed; later declarations indented by
    # 4 spaces are then routes of the node above.
    assert run("    START start:\n        NEXT end\nEND end", "").accepted
    assert isinstance(parse("    START start:\n        NEXT a\n    PULLER_RB a:\n        [R] end\n    END end"),
                      ParseError)


def test_outer_fence_lines_are_dropped():
    assert run("```\nSTART start:\n    NEXT end\nEND end\n```", "").accepted


@pytest.mark.parametrize("text, fragment", [
    (prog("PULLER_RB a:", "    [R] end", "END end"), "no 'START start:'"),
    (prog("START start:", "    NEXT start"), "no 'END end'"),
    ("", "empty"),
    ("# only a comment\n\n", "empty"),
])
def test_missing_start_or_end(text, fragment):
    error = parse(text)
    assert isinstance(error, ParseError) and fragment in error.message


def test_non_text_never_raises():
    assert isinstance(parse(None), ParseError)  # type: ignore[arg-type]
    result = run(12345, "R")  # type: ignore[arg-type]
    assert not result.accepted and result.error_kind == "parse"


def test_tape_symbols_outside_the_four_colours_are_never_consumed():
    # 'X' is handled by neither puller: both take [EMPTY] and leave it on the tape.
    program = prog("START start:", "    NEXT rb", "PULLER_RB rb:", "    [EMPTY] yg",
                   "PULLER_YG yg:", "    [EMPTY] end", "END end")
    result = run(program, "X")
    assert result.accepted and result.tape == "X"


# --------------------------------------------------------------------------- the shipped manual

def test_manual_example_behaves_as_the_manual_says():
    # The prompt's example: "exactly one red" holds only with its note that the final tape must be
    # empty; "RR" reaches `end` with an R left on the tape.
    manual = manual_text()
    example = re.findall(r"```manufactoria\n(.*?)```", manual, re.DOTALL)[-1]
    for tape, want, left in [("R", True, ""), ("RR", True, "R"), ("RB", True, "B"), ("", False, ""),
                             ("B", False, ""), ("Y", False, "Y")]:
        result = run(example, tape)
        assert (result.accepted, result.tape) == (want, left), tape
    assert run(example, "R").trace == ["start", "entry", "end"]
