"""Facts from the differential run against the RESD paper's own Manufactoria verifier
(docs/environments.md): concrete answers, each with the reward and the feedback shape that verifier
gives them, on one fixed problem ("the tape contains RB")."""

from __future__ import annotations

import pytest

from resd.envs.manufactoria.scoring import score_completion

# A correct factory for "contains RB": find R, then B right after it.
GOOD = """START start:
    NEXT seek
PULLER_RB seek:
    [R] after_r
    [B] seek
    [EMPTY] seek_yg
PULLER_YG seek_yg:
    [Y] seek
    [G] seek
PULLER_RB after_r:
    [R] after_r
    [B] end
    [EMPTY] after_r_yg
PULLER_YG after_r_yg:
    [Y] seek
    [G] seek
END end
"""
TAPES = {"": False, "R": False, "B": False, "RB": True, "BR": False, "RRB": True, "RGB": False, "YRBY": True,
         "GGRRRB": True, "RYB": False, "BBBB": False, "YYRB": True}
TESTS = [{"input": t, "expected_output": "", "expected_accepted": a, "check_output": False} for t, a in TAPES.items()]


def fenced(code: str) -> str:
    return f"Here it is.\n```manufactoria\n{code}```\n"


def shape(feedback: str) -> str:
    if not feedback:
        return "empty"
    first = feedback.split("\n", 1)[0]
    return {"Runtime Error": "runtime", "Parse Error": "parse"}.get(first, "wrong" if "Wrong Answer" in first
                                                                   else "format" if "Format" in first else first)


CASES = [
    # (what, completion, official reward, official feedback shape)
    ("the reference", fenced(GOOD), 1.0, "empty"),
    ("code on the opening fence line", f"```manufactoria {GOOD}```", 1.0, "empty"),
    ("a bare fence", f"```\n{GOOD}```", 1.0, "empty"),
    ("a python-tagged fence: 'python' becomes line 1", f"```python\n{GOOD}```", 0.0, "parse"),
    ("no closing fence", f"```manufactoria\n{GOOD}", 0.0, "format"),
    ("no fence at all", GOOD, 0.0, "format"),
    ("the last block counts", fenced("START start:\n    NEXT end\nEND end\n") + fenced(GOOD), 1.0, "empty"),
    ("a block inside <think> counts too", f"<think>```manufactoria\n{GOOD}```</think> done", 1.0, "empty"),
    ("declarations indented by 2 spaces", fenced(GOOD.replace("PULLER_RB after_r:", "  PULLER_RB after_r:")),
     1.0, "empty"),
    ("a declaration indented by 4 spaces is a route", fenced(GOOD.replace("PULLER_YG seek_yg:", "    PULLER_YG seek_yg:")),
     0.0, "parse"),
    ("a route indented by 2 spaces is a declaration", fenced(GOOD.replace("    [B] end", "  [B] end")), 0.0, "parse"),
    ("routes indented by tabs", fenced(GOOD.replace("    ", "\t")), 1.0, "empty"),
    ("Windows line ends", fenced(GOOD.replace("\n", "\r\n")), 1.0, "empty"),
    ("a space before the colon", fenced(GOOD.replace("seek_yg:", "seek_yg :")), 0.0, "parse"),
    ("a comment holding a colon after END", fenced(GOOD.replace("END end", "END end  # done: accept")), 1.0, "empty"),
    ("a branch given twice: the first wins", fenced(GOOD.replace("    [B] end\n", "    [B] end\n    [B] NONE\n")),
     1.0, "empty"),
    ("a branch given twice, wrong one first", fenced(GOOD.replace("    [B] end\n", "    [B] NONE\n    [B] end\n")),
     0.0, "runtime"),
    ("upper-case END as a target", fenced(GOOD.replace("[B] end", "[B] END")), 0.0, "runtime"),
    ("a [Y] route on a PULLER_RB", fenced(GOOD.replace("    [B] seek\n", "    [Y] seek\n")), 0.0, "parse"),
    ("accepting everything", fenced("START start:\n    NEXT end\nEND end\n"), 0.0, "wrong"),
    ("painting before end: only the verdict is checked",
     fenced(GOOD.replace("[B] end", "[B] paint") + "PAINTER_RED paint:\n    NEXT end\n"), 1.0, "empty"),
]


@pytest.mark.parametrize("what, completion, reward, feedback_shape", CASES, ids=[c[0] for c in CASES])
def test_the_official_verdict_and_feedback_shape(what, completion, reward, feedback_shape):
    outcome = score_completion(completion, TESTS)
    assert outcome.reward == reward, outcome.feedback
    assert shape(outcome.feedback) == feedback_shape, outcome.feedback
    assert "Passed" not in outcome.feedback


def test_without_check_output_the_tape_must_end_empty():
    painted = fenced(GOOD.replace("[B] end", "[B] paint") + "PAINTER_RED paint:\n    NEXT end\n")
    unchecked = [{"input": t, "expected_accepted": a} for t, a in TAPES.items()]
    assert score_completion(painted, unchecked).reward == 0.0
    # The reference stops at the first RB and leaves the rest of the tape: "YRBY" ends with "Y".
    outcome = score_completion(fenced(GOOD), unchecked)
    assert outcome.reward == 0.0 and outcome.passed[list(TAPES).index("YRBY")] is False
    assert outcome.passed[list(TAPES).index("RB")] is True


def test_a_parse_error_fails_every_case_with_accuracy_zero():
    outcome = score_completion(fenced(GOOD.replace("seek_yg:", "seek_yg :")), TESTS)
    assert outcome.acc == 0.0 and outcome.passed == [False] * len(TESTS)
    assert outcome.feedback.startswith("Parse Error\nLine 7: not a node declaration")
