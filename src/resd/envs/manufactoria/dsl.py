"""Parser and interpreter for the Manufactoria factory language, with the RESD verifier's rules.

A program is a set of nodes. A robot carrying a tape of coloured symbols (R, B, Y, G) starts at
the node `start`; pullers read and remove the front symbol and branch on it, painters append a
symbol to the back, and the robot is accepted only when it reaches the node `end`.

The acceptance rules are those of the verifier the RESD paper trained with (§4.1, Manufactoria-Has;
checked against it by a differential run, see docs/environments.md), so that a reward here means
the same as a reward there, quirks included:

- the program text is trimmed first, and a lone ``` line at either end is dropped;
- blank lines and lines whose first non-blank character is `#` are skipped; `#` after code on a
  declaration or route line starts a comment;
- a line indented by at least 4 spaces or a tab is a route of the node above; any other line is a
  node declaration (so a declaration indented by 1-3 spaces is still a declaration, and a route
  indented by 1-3 spaces is read as a bad declaration);
- `KIND id:` with the colon right after the id (`PULLER_RB id :` is not a declaration); `END end`
  takes no colon; START must be `start`, END must be `end`;
- a node may list the same branch twice: the first matching route wins;
- START and painters need exactly one NEXT route; pullers any number (a missing branch rejects);
- a route target must be declared, or be `NONE` or `END` (upper-case `END` is not the node `end`:
  a robot sent there is rejected at run time as an unknown node);
- a robot is rejected after 1000 iterations (the list of visited nodes, `NONE` and `end` included,
  never exceeds 1000 entries).

Both `parse` and `run` are total: on any text they return a value, never raise, so a judge can call
them on raw model output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

COLOURS = "RBYG"
MAX_STEPS = 1000
"""Iterations after which the robot is rejected as a possible infinite loop (verifier value)."""

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

_DECLARATION = re.compile(r"(" + "|".join(NODE_KINDS) + r")\s+(\w+):?\s*(?:#.*)?")
_PULLER_ROUTE = re.compile(r"\[([RBYG]|EMPTY)\]\s+(\w+)\s*(?:#.*)?")
_NEXT_ROUTE = re.compile(r"NEXT\s+(\w+)\s*(?:#.*)?")
_ROUTE_INDENT = ("    ", "\t")

ErrorKind = Literal["parse", "runtime", "loop"]


@dataclass(frozen=True)
class Node:
    """One declared node: its id, kind, routes in source order ((branch, target); branch "NEXT"
    for START and painters) and the line of its declaration."""

    id: str
    kind: str
    line: int
    routes: tuple[tuple[str, str], ...] = ()

    def target(self, branch: str) -> str | None:
        """The first route for `branch` (duplicates are allowed; the first one wins), or None."""
        return next((to for b, to in self.routes if b == branch), None)


@dataclass(frozen=True)
class Program:
    """A parsed, validated program: node id -> node."""

    nodes: dict[str, Node]


@dataclass(frozen=True)
class ParseError:
    """Why a program does not parse; `line` counts lines of the trimmed program text (None if global)."""

    message: str
    line: int | None = None

    def __str__(self) -> str:
        return f"Line {self.line}: {self.message}" if self.line is not None else self.message


@dataclass
class RunResult:
    """What happened to one robot.

    accepted:   reached the node `end`.
    tape:       the tape when the robot stopped.
    trace:      node ids in visiting order, ending with `end`, `NONE` or the last node reached.
    error:      why a rejected robot stopped ("routed to NONE", unknown node, loop); None when accepted
                (and for parse errors inside `run`, where it holds the parse error).
    error_kind: "parse" | "runtime" | "loop" | None.
    """

    accepted: bool
    tape: str
    trace: list[str] = field(default_factory=list)
    error: str | None = None
    error_kind: ErrorKind | None = None

    @property
    def front(self) -> str:
        """Front symbol of the tape when the robot stopped ("" for an empty tape)."""
        return self.tape[:1]


def _route(kind: str, body: str, line_no: int) -> tuple[str, str] | ParseError:
    """One route line (already stripped) of a node of `kind`."""
    if kind == "END":
        return ParseError("the END node takes no routes", line_no)
    if kind in PULLER_HANDLES:
        match = _PULLER_ROUTE.fullmatch(body)
        if not match:
            return ParseError(f"cannot read puller route {body!r}: expected '[R|B|Y|G|EMPTY] target'", line_no)
        return match.group(1), match.group(2)
    match = _NEXT_ROUTE.fullmatch(body)
    if not match:
        return ParseError(f"cannot read route {body!r}: expected 'NEXT target'", line_no)
    return "NEXT", match.group(1)


def _declaration(raw: str, line_no: int, nodes: dict[str, Node]) -> tuple[str, str] | ParseError:
    """(kind, id) of a declaration line, checked against the nodes declared so far."""
    match = _DECLARATION.fullmatch(raw.strip())
    if not match:
        return ParseError(f"not a node declaration: {raw.strip()!r} (expected e.g. 'PULLER_RB name:'; "
                          f"route lines are indented by 4 spaces or a tab)", line_no)
    kind, node_id = match.groups()
    has_colon = ":" in raw.split("#", 1)[0]
    if kind == "END" and has_colon:
        return ParseError("the END declaration takes no colon: write 'END end'", line_no)
    if kind != "END" and not has_colon:
        return ParseError(f"a {kind} declaration needs a colon right after its id", line_no)
    if node_id in nodes:
        return ParseError(f"node id {node_id!r} is declared twice", line_no)
    if kind == "START" and node_id != START_ID:
        return ParseError(f"the START node must be called {START_ID!r}", line_no)
    if kind == "END" and node_id != END_ID:
        return ParseError(f"the END node must be called {END_ID!r}", line_no)
    return kind, node_id


def _check_routes(kind: str, routes: list[tuple[str, str]], line_no: int) -> ParseError | None:
    if (kind == "START" or kind in PAINTER_COLOUR) and len(routes) != 1:
        return ParseError(f"a {kind} node needs exactly one NEXT route, it has {len(routes)}", line_no)
    if kind in PULLER_HANDLES:
        allowed = (*PULLER_HANDLES[kind], "EMPTY")
        wrong = next((b for b, _ in routes if b not in allowed), None)
        if wrong is not None:
            return ParseError(f"{kind} has no [{wrong}] branch (its branches: "
                              f"{', '.join(f'[{b}]' for b in allowed)})", line_no)
    return None


def _program_lines(text: str) -> list[tuple[str, int]]:
    """(line, number) of the lines that carry code: trimmed text, outer ``` lines and comments dropped."""
    lines = text.strip().split("\n")
    if lines and lines[0].strip() == "```":
        lines = lines[1:]
    if lines and lines[-1].strip() == "```":
        lines = lines[:-1]
    return [(line, n) for n, line in enumerate(lines, start=1)
            if line.strip() and not line.strip().startswith("#")]


def parse(text: str) -> Program | ParseError:
    """Parse and validate a program. Never raises: bad input gives a `ParseError`."""
    if not isinstance(text, str):
        return ParseError(f"a program must be text, got {type(text).__name__}")
    lines = _program_lines(text)
    if not lines:
        return ParseError("the program is empty")
    nodes: dict[str, Node] = {}
    i = 0
    while i < len(lines):
        raw, line_no = lines[i]
        declared = _declaration(raw, line_no, nodes)
        if isinstance(declared, ParseError):
            return declared
        kind, node_id = declared
        routes: list[tuple[str, str]] = []
        i += 1
        while i < len(lines) and lines[i][0].startswith(_ROUTE_INDENT):
            route = _route(kind, lines[i][0].strip(), lines[i][1])
            if isinstance(route, ParseError):
                return route
            routes.append(route)
            i += 1
        error = _check_routes(kind, routes, line_no)
        if error:
            return error
        nodes[node_id] = Node(node_id, kind, line_no, tuple(routes))
    if START_ID not in nodes or nodes[START_ID].kind != "START":
        return ParseError(f"the program has no 'START {START_ID}:' node")
    if END_ID not in nodes or nodes[END_ID].kind != "END":
        return ParseError(f"the program has no 'END {END_ID}' node")
    for node in nodes.values():
        for _, target in node.routes:
            if target not in nodes and target not in (REJECT_TARGET, "END"):
                return ParseError(f"node {node.id!r} routes to {target!r}, which is not declared "
                                  f"(declare it, or use NONE to reject)", node.line)
    return Program(nodes=nodes)


def _next_node(node: Node, tape: str) -> tuple[str, str]:
    """(next node id, tape after this node) for a robot at a non-END node."""
    if node.kind in PAINTER_COLOUR:
        return node.routes[0][1], tape + PAINTER_COLOUR[node.kind]
    if node.kind in PULLER_HANDLES:
        front = tape[:1]
        if front and front in PULLER_HANDLES[node.kind]:
            return node.target(front) or REJECT_TARGET, tape[1:]
        return node.target("EMPTY") or REJECT_TARGET, tape  # empty tape or another colour: nothing removed
    return node.routes[0][1], tape  # START


def execute(program: Program, tape: str, max_steps: int = MAX_STEPS) -> RunResult:
    """Run a robot with `tape` through a parsed program, for at most `max_steps` iterations."""
    node_id = START_ID
    trace: list[str] = []
    for _ in range(max_steps):
        trace.append(node_id)
        if node_id == REJECT_TARGET:
            return RunResult(False, tape, trace, error="routed to NONE", error_kind="runtime")
        if node_id == END_ID:
            return RunResult(True, tape, trace)
        node = program.nodes.get(node_id)
        if node is None:  # only upper-case END gets here: it passes validation but is no node
            return RunResult(False, tape, trace, error=f"unknown node {node_id!r} (only the lower-case id "
                                                       f"'end' accepts)", error_kind="runtime")
        node_id, tape = _next_node(node, tape)
    return RunResult(False, tape, trace, error=f"still running after {max_steps} steps (possible infinite loop)",
                     error_kind="loop")


def run(program: str | Program, tape: str, max_steps: int = MAX_STEPS) -> RunResult:
    """Parse (if given text) and run one robot. Never raises; a parse error is a rejected result."""
    if not isinstance(tape, str):
        tape = "" if tape is None else str(tape)
    parsed = program if isinstance(program, Program) else parse(program)
    if isinstance(parsed, ParseError):
        return RunResult(False, tape, [], error=f"parse error: {parsed}", error_kind="parse")
    return execute(parsed, tape, max_steps)
