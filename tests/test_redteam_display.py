"""Model text shown to a person is shown, never obeyed: rich markup in a curator note is printed
literally, and terminal escape sequences (ANSI colours, screen clears, OSC titles and links) or
carriage returns in a program's output or a note never reach the terminal; `context.jsonl` keeps
them JSON-escaped."""

from __future__ import annotations

import json

from resd.cli import main
from resd.context import Playbook
from resd.envs.text import printable

ESCAPES = "\x1b[2J\x1b[31m\x1b]0;owned\x07\x1b]8;;http://evil.example\x1b\\link\x1b]8;;\x1b\\\x9b2J"
FAKE = "All tests passed.\rPassed 0/5"


def _no_terminal_control(text: str) -> None:
    bad = [c for c in text if (ord(c) < 32 and c not in "\n\t") or 0x7f <= ord(c) <= 0x9f]
    assert bad == [], [hex(ord(c)) for c in bad][:10]


def test_printable_keeps_text_and_drops_every_control_sequence():
    assert printable("a\x1b[1mb\x1b[0m\tc\r\nd\re") == "ab\tc\nd\ne"
    assert printable(ESCAPES) == "link"
    assert printable("x\u202eevil") == "xevil"  # a bidi override cannot reorder what a reader sees


def test_playbook_show_prints_markup_and_escapes_in_notes_literally(tmp_path, capsys):
    """Red team: a curator note holding "[/b]" made `resd playbook show` raise (rich markup)."""
    book = Playbook()
    book.add("Close tags like [/b] and [bold]this[/bold] " + ESCAPES + FAKE, section="rules", step=1)
    book.add("[/]", section="[red]x[/red]", step=1)
    path = tmp_path / "[b]playbook.json"
    book.save(path)
    assert main(["playbook", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "[/b]" in out and "[bold]this[/bold]" in out and "[/]" in out
    _no_terminal_control(out)


def test_env_show_strips_escapes_from_program_output_and_feedback(tmp_path, capsys):
    program = ("import sys\nsys.stdout.write(" + repr(ESCAPES + FAKE) + ")\n"
               "sys.stderr.write('\\x1b[2J')\nraise SystemExit(1)")
    completion = tmp_path / "answer.txt"
    completion.write_text(f"```python\n{program}\n```\n\x1b]0;title\x07")
    assert main(["env", "show", "code", "--split", "test", "--completion", str(completion)]) == 0
    out = capsys.readouterr().out
    assert "reward: 0" in out
    _no_terminal_control(out)


def test_code_feedback_quotes_program_output_without_control_characters():
    from resd.envs import get

    env = get("code")
    task = env.tasks("test")[0]
    program = "import sys\nsys.stdout.write(" + repr(ESCAPES + FAKE) + ")"
    outcome = env.score(task, f"```python\n{program}\n```")
    assert outcome.reward == 0 and "Wrong answer." in outcome.feedback
    assert "Passed 0/5" in outcome.feedback  # the text is quoted, on a line of its own
    _no_terminal_control(outcome.feedback)


def test_context_log_keeps_model_text_json_escaped(tmp_path):
    from resd.run.rundir import RunDir

    run = RunDir(tmp_path)
    run.create()
    run.log_context_outputs(3, [{"phase": "curator", "text": ESCAPES + FAKE}])
    raw = run.context_log.read_text()
    _no_terminal_control(raw)
    assert json.loads(raw)["text"] == ESCAPES + FAKE  # nothing lost: escaped, not dropped
