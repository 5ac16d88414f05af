"""Property tests: the parser, interpreter and judge never raise or hang, whatever the text;
and reference factories agree with the reference matchers on arbitrary tapes."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resd.envs.base import FEEDBACK_LIMIT, Outcome
from resd.envs.manufactoria import ParseError, Program, parse, run
from resd.envs.manufactoria.dsl import NODE_KINDS
from resd.envs.manufactoria.generators import Criterion, matcher
from resd.envs.manufactoria.scoring import score_completion
from resd.envs.manufactoria.solutions import reference_program

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TAPES = st.text(alphabet="RBYG", max_size=20)
TESTS = [{"input": t, "expected_accepted": a} for t, a in [("", False), ("R", True), ("BY", False), ("RY", True)]]

IDS = st.sampled_from(["start", "end", "a", "b", "c", "END", "NONE", "x_1"])
ROUTE = st.one_of(
    st.builds(lambda b, t: f"[{b}] {t}", st.sampled_from(["R", "B", "Y", "G", "EMPTY", "r", "Q"]), IDS),
    st.builds(lambda t: f"NEXT {t}", IDS),
    st.sampled_from(["", "# note", "NEXT", "[R]"]),
)
NODE = st.builds(
    lambda kind, node_id, colon, indent, routes: f"{kind} {node_id}{colon}\n"
    + "".join(f"{indent}{r}\n" for r in routes),
    st.sampled_from([*NODE_KINDS, "PULLER", "start"]), IDS, st.sampled_from([":", "", " :"]),
    st.sampled_from(["    ", "\t", "  ", "        "]), st.lists(ROUTE, max_size=4),
)
# Programs built from the language's own tokens: many parse, many loop, many break one rule.
DSL_TEXT = st.builds(lambda nodes, tail: "".join(nodes) + tail, st.lists(NODE, max_size=6),
                     st.sampled_from(["", "END end\n", "END end:\n", "START start:\n    NEXT end\n"]))



@st.composite
def valid_programs(draw) -> str:
    """Well-formed programs over a random graph: they accept, reject, hit unknown END, or loop."""
    kinds = draw(st.lists(st.sampled_from(NODE_KINDS[2:]), min_size=1, max_size=6))
    ids = [f"n{i}" for i in range(len(kinds))]
    targets = st.sampled_from([*ids, "end", "start", "NONE", "END"])
    lines = ["START start:", f"    NEXT {draw(targets)}"]
    for node_id, kind in zip(ids, kinds):
        lines.append(f"{kind} {node_id}:")
        if kind.startswith("PULLER"):
            branches = ("R", "B") if kind == "PULLER_RB" else ("Y", "G")
            for branch in draw(st.lists(st.sampled_from([*branches, "EMPTY"]), unique=True)):
                lines.append(f"    [{branch}] {draw(targets)}")
        else:
            lines.append(f"    NEXT {draw(targets)}")
    return "\n".join([*lines, "END end"]) + "\n"


def check_result(result, max_steps: int) -> None:
    assert isinstance(result.accepted, bool) and isinstance(result.tape, str)
    assert len(result.trace) <= max_steps
    assert result.error_kind in (None, "parse", "runtime", "loop")
    if result.accepted:
        assert result.trace[-1] == "end" and result.error is None
    if result.error_kind == "loop":
        assert len(result.trace) == max_steps and not result.accepted
    if result.error_kind == "parse":
        assert result.trace == []


@FAST
@given(st.text())
def test_parse_and_run_never_raise_on_arbitrary_text(text):
    assert isinstance(parse(text), (Program, ParseError))
    check_result(run(text, "RBYG"), 1000)


@FAST
@given(st.one_of(DSL_TEXT, valid_programs()), TAPES, st.integers(min_value=1, max_value=1000))
def test_run_terminates_within_the_step_limit_on_dsl_like_programs(text, tape, max_steps):
    parsed = parse(text)
    result = run(text, tape, max_steps=max_steps)
    check_result(result, max_steps)
    if isinstance(parsed, Program):
        assert result.error_kind != "parse"
        assert all(node in parsed.nodes or node in ("NONE", "END") for node in result.trace)


@FAST
@given(st.one_of(
    st.text(),
    st.builds(lambda a, code, b: f"{a}```manufactoria\n{code}```{b}", st.text(max_size=50), DSL_TEXT,
              st.text(max_size=50)),
    st.builds(lambda code: f"```\n{code}", DSL_TEXT),  # unclosed fence
    st.builds(lambda code: f"```manufactoria\n{code}```", valid_programs()),
))
def test_score_always_returns_a_bounded_outcome(completion):
    for mode in ("all_pass", "pass_rate"):
        outcome = score_completion(completion, TESTS, reward_mode=mode)
        assert isinstance(outcome, Outcome)
        assert 0.0 <= outcome.acc <= 1.0 and 0.0 <= outcome.reward <= 1.0
        assert len(outcome.passed) == len(TESTS) and len(outcome.feedback) <= FEEDBACK_LIMIT
        assert outcome.details["error_kind"] in ("format", "parse", "loop", "runtime", "wrong", None)
        assert (outcome.feedback == "") == outcome.solved
        if mode == "all_pass":
            assert outcome.reward in (0.0, 1.0)


@FAST
@given(st.sampled_from(["contains_substring", "contains_ordered"]), st.text(alphabet="RBYG", min_size=1, max_size=6),
       st.lists(TAPES, min_size=1, max_size=10))
def test_reference_factories_agree_with_matchers_on_sequences(family, pattern, tapes):
    criterion = Criterion(family, pattern=pattern)
    program, accepts = reference_program(criterion), matcher(criterion)
    for tape in tapes:
        result = run(program, tape)
        assert result.error in (None, "routed to NONE") and result.accepted == accepts(tape), (pattern, tape)


@FAST
@given(st.dictionaries(st.sampled_from("RBYG"), st.integers(min_value=1, max_value=4), min_size=1, max_size=4),
       st.lists(TAPES, min_size=1, max_size=10))
def test_reference_factories_agree_with_matchers_on_counts(needs, tapes):
    criterion = Criterion("contains_count", requirements=tuple(sorted(needs.items())))
    program, accepts = reference_program(criterion), matcher(criterion)
    for tape in tapes:
        result = run(program, tape)
        assert result.error in (None, "routed to NONE") and result.accepted == accepts(tape), (needs, tape)


@FAST
@given(valid_programs(), TAPES)
def test_well_formed_programs_parse_and_follow_the_rules(text, tape):
    program = parse(text)
    assert isinstance(program, Program), str(program)
    result = run(program, tape)
    check_result(result, 1000)
    if result.error_kind == "runtime":
        # the only runtime errors a valid program can hit
        assert result.error == "routed to NONE" or result.error.startswith("unknown node 'END'")
