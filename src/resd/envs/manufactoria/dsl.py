"""Parser and interpreter for the Manufactoria factory language.

A program is a set of nodes. A robot carrying a tape of coloured symbols (R, B, Y, G) starts at
the node `start`; pullers read and remove the front symbol and branch on it, painters append a
symbol to the back, and the robot is accepted only when it reaches the node `end`. The exact
rules (including the reference verifier's quirks, kept on purpose so scores stay comparable with
the RESD paper) are listed in `manual.md` and in /work/shared/notes/task-environments.md §1.

Both `parse` and `run` are total: on any text they return a value, never raise, and execution
stops after `max_steps` node visits, so a judge can call them on raw model output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

COLOURS = "RBYG"
MAX_STEPS = 1000
"""Node visits after which the robot is rejected as a possible infinite loop (reference value)."""

START_ID = "start"
END_ID = "end"
REJECT_TARGET = "NONE"

# Which front symbols each puller removes; any other front symbol (or an empty tape) takes the
# [EMPTY] branch and stays on the tape.
PULLER_HANDLES: dict[str, tuple[str, ...]] = {"PULLER_RB": ("R", "B"), "PULLER_YG": ("Y", "G")}
PAINTER_COLOUR: dict[str, str] = {
    "PAINTER_RED": "R",
    "PAINTER_BLUE": "B",
    "PAINTER_YELLOW": "Y",
    "PAINTER_GREEN": "G",
}
NODE_KINDS: tuple[str, ...] = ("START", "END", *PULLER_HANDLES, *PAINTER_COLOUR)

_DECLARATION = re.compile(r"(\w+)\s+(\w+)\s*(:?)")
_PULLER_ROUTE = re.compile(r"\[(\w+)\]\s+(\w+)")
_NEXT_ROUTE = re.compile(r"NEXT\s+(\w+)")

ErrorKind = Literal["parse", "runtime", "loop"]


@dataclass(frozen=True)
class Node:
    """One declared node: its id, kind, routes (branch -> target id) and source line numbers."""

    id: str
    kind: str
    line: int
    routes: dict[str, str] = field(default_factory=dict)
    route_lines: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Program:
    """A parsed, validated program: node id -> node."""

    nodes: dict[str, Node]


@dataclass(frozen=True)
class ParseError:
    """Why a program does not parse; `line` is 1-based within the program text (None if global)."""

    message: str
    line: int | None = None

    def __str__(self) -> str:
        return f"Line {self.line}: {self.message}" if self.line is not None else self.message


@dataclass
class RunResult:
    """What happened to one robot.

    accepted:   reached the node `end`.
    tape:       the tape when the robot stopped.
    trace:      node ids in visiting order (including `end` when accepted).
    error:      parse / runtime / loop error text, None for a normal accept or reject.
    error_kind: "parse" | "runtime" | "loop" | None.
    reason:     one sentence saying why the robot stopped (empty when accepted).
    stopped_at: id of the node where the robot was accepted or rejected (None on parse errors).
    front:      front symbol of the tape at that moment ("" for an empty tape).
    steps:      node visits used.
    """

    accepted: bool
    tape: str
    trace: list[str] = field(default_factory=list)
    error: str | None = None
    error_kind: ErrorKind | None = None
    reason: str = ""
    stopped_at: str | None = None
    front: str = ""
    steps: int = 0


def _branches_for(kind: str) -> tuple[str, ...]:
    if kind in PULLER_HANDLES:
        return (*PULLER_HANDLES[kind], "EMPTY")
    if kind == "START" or kind in PAINTER_COLOUR:
        return ("NEXT",)
    return ()


def _parse_route(node: Node, body: str, line_no: int) -> ParseError | None:
    """Attach one indented route line to `node` (mutating its dicts); return an error or None."""
    if node.kind == "END":
        return ParseError("the END node takes no routes", line_no)
    if node.kind in PULLER_HANDLES:
        match = _PULLER_ROUTE.fullmatch(body)
        if not match:
            return ParseError(
                f"cannot read route {body!r} of {node.kind} {node.id!r}: expected '[COLOUR] target' "
                f"with COLOUR one of {', '.join(_branches_for(node.kind))}", line_no)
        branch, target = match.groups()
        if branch not in _branches_for(node.kind):
            return ParseError(
                f"{node.kind} handles only [{'], ['.join(_branches_for(node.kind))}], not [{branch}]", line_no)
    else:
        match = _NEXT_ROUTE.fullmatch(body)
        if not match:
            return ParseError(f"cannot read route {body!r} of {node.kind} {node.id!r}: expected 'NEXT target'",
                              line_no)
        branch, target = "NEXT", match.group(1)
    if branch in node.routes:
        return ParseError(f"node {node.id!r} has a second {'[' + branch + ']' if branch != 'NEXT' else 'NEXT'} "
                          f"route; give each branch once", line_no)
    node.routes[branch] = target
    node.route_lines[branch] = line_no
    return None


def _parse_declaration(code: str, line_no: int) -> Node | ParseError:
    match = _DECLARATION.fullmatch(code.rstrip())
    if not match:
        return ParseError(f"cannot read {code.strip()!r}: expected a node declaration such as "
                          f"'PULLER_RB name:' (route lines must be indented by 4 spaces or a tab)", line_no)
    kind, node_id, colon = match.groups()
    if kind not in NODE_KINDS:
        return ParseError(f"unknown node type {kind!r}; use one of {', '.join(NODE_KINDS)}", line_no)
    if kind == "END":
        if colon:
            return ParseError("the END declaration takes no colon: write 'END end'", line_no)
        if node_id != END_ID:
            return ParseError(f"the END node must be called {END_ID!r}, not {node_id!r}", line_no)
    else:
        if not colon:
            return ParseError(f"missing ':' after '{kind} {node_id}'", line_no)
        if kind == "START" and node_id != START_ID:
            return ParseError(f"the START node must be called {START_ID!r}, not {node_id!r}", line_no)
    return Node(id=node_id, kind=kind, line=line_no)


def parse(text: str) -> Program | ParseError:
    """Parse and validate a program. Never raises: bad input gives a `ParseError`."""
    if not isinstance(text, str):
        return ParseError(f"a program must be text, got {type(text).__name__}")
    nodes: dict[str, Node] = {}
    current: Node | None = None
    for line_no, raw in enumerate(text.split("\n"), start=1):
        code = raw.rstrip("\r").split("#", 1)[0]  # `#` starts a comment, whole-line or trailing
        if not code.strip():
            continue
        if code[0] in " \t":
            if not (code.startswith("    ") or code.startswith("\t")):
                return ParseError("indent route lines with 4 spaces or a tab", line_no)
            if current is None:
                return ParseError("route line before any node declaration", line_no)
            error = _parse_route(current, code.strip(), line_no)
            if error:
                return error
            continue
        declared = _parse_declaration(code, line_no)
        if isinstance(declared, ParseError):
            return declared
        if declared.id in nodes:
            return ParseError(f"duplicate node id {declared.id!r} (first declared on line "
                              f"{nodes[declared.id].line})", line_no)
        nodes[declared.id] = declared
        current = declared

    if START_ID not in nodes or nodes[START_ID].kind != "START":
        return ParseError(f"the program has no 'START {START_ID}:' node")
    if END_ID not in nodes or nodes[END_ID].kind != "END":
        return ParseError(f"the program has no 'END {END_ID}' node")
    for node in nodes.values():
        if _branches_for(node.kind) == ("NEXT",) and "NEXT" not in node.routes:
            return ParseError(f"{node.kind} {node.id!r} needs exactly one 'NEXT target' route", node.line)
        for branch, target in node.routes.items():
            # Upper-case END passes validation, as in the reference verifier, and is rejected at
            # runtime as an unknown node; only the lower-case id `end` accepts.
            if target not in nodes and target not in (REJECT_TARGET, "END"):
                return ParseError(f"route target {target!r} is not a declared node "
                                  f"(declare it, or use NONE to reject)", node.route_lines[branch])
    return Program(nodes=nodes)


def execute(program: Program, tape: str, max_steps: int = MAX_STEPS) -> RunResult:
    """Run a robot with `tape` through a parsed program (at most `max_steps` node visits)."""
    node_id, previous, via = START_ID, "", ""
    trace: list[str] = []
    while True:
        front = tape[:1]
        if node_id == REJECT_TARGET:
            return RunResult(False, tape, trace, reason=f"node {previous!r} routed the robot to NONE via {via}",
                             stopped_at=previous, front=front, steps=len(trace))
        node = program.nodes.get(node_id)
        if node is None:
            return RunResult(False, tape, trace, error=f"Unknown node: {node_id}", error_kind="runtime",
                             reason=f"node {previous!r} routes {via} to {node_id!r}, which is not a node "
                                    f"(only the lower-case id 'end' accepts)",
                             stopped_at=previous, front=front, steps=len(trace))
        if len(trace) >= max_steps:
            return RunResult(False, tape, trace, error=f"Exceeded {max_steps} steps: possible infinite loop",
                             error_kind="loop", reason=f"still running after {max_steps} node visits",
                             stopped_at=node_id, front=front, steps=len(trace))
        trace.append(node_id)
        if node.kind == "END":
            return RunResult(True, tape, trace, stopped_at=node_id, front=front, steps=len(trace))
        if node.kind in PAINTER_COLOUR:
            tape += PAINTER_COLOUR[node.kind]
            branch = "NEXT"
        elif node.kind in PULLER_HANDLES:
            if front and front in PULLER_HANDLES[node.kind]:
                branch, tape = front, tape[1:]
            else:
                branch = "EMPTY"  # empty tape, or a colour this puller does not handle: nothing removed
        else:  # START
            branch = "NEXT"
        target = node.routes.get(branch)
        if target is None:  # a missing branch behaves like NONE
            shown = repr(front) if front else "empty tape"
            return RunResult(False, tape, trace,
                             reason=f"{node.kind} {node_id!r} has no [{branch}] branch (front: {shown})",
                             stopped_at=node_id, front=front, steps=len(trace))
        previous, via, node_id = node_id, f"[{branch}]" if branch != "NEXT" else "NEXT", target


def run(program: str | Program, tape: str, max_steps: int = MAX_STEPS) -> RunResult:
    """Parse (if given text) and run one robot. Never raises; a parse error is a rejected result."""
    if not isinstance(tape, str):
        tape = "" if tape is None else str(tape)
    parsed = program if isinstance(program, Program) else parse(program)
    if isinstance(parsed, ParseError):
        return RunResult(False, tape, [], error=f"Parse error: {parsed}", error_kind="parse",
                         reason=str(parsed), front=tape[:1])
    return execute(parsed, tape, max_steps)
