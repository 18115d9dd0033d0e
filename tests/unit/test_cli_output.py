"""The client CLI's printing (issue 19 item 3): tables and colour on a terminal, plain text when piped."""

from __future__ import annotations

import io

from rich.console import Console

from functions.cli_output import Output


def _on_terminal() -> tuple[Output, io.StringIO]:
    out = Output(as_json=False)
    buffer = io.StringIO()
    out.out = Console(file=buffer, force_terminal=True, color_system="standard", width=100, highlight=False)
    return out, buffer


def test_a_terminal_gets_a_table_with_coloured_statuses() -> None:
    out, buffer = _on_terminal()
    out.table(["id", "status"], [["run_1", "succeeded"], ["run_2", "failed"], ["run_3", "[bold]x"]])
    text = buffer.getvalue()
    assert "┃" in text or "│" in text  # a drawn table
    assert "\x1b[32msucceeded" in text and "\x1b[31mfailed" in text  # green, red
    assert "[bold]x" in text  # data is never read as markup


def test_a_pipe_gets_tab_separated_plain_text(capsys) -> None:
    out = Output(as_json=False)
    assert not out.terminal  # pytest captures stdout: not a terminal
    out.table(["id", "status"], [["run_1", "succeeded"], ["run_2", None]])
    assert capsys.readouterr().out == "ID\tSTATUS\nrun_1\tsucceeded\nrun_2\t\n"


def test_under_json_messages_go_to_stderr(capsys) -> None:
    out = Output(as_json=True)
    out.say("started")
    out.json({"a": 1})
    captured = capsys.readouterr()
    assert captured.out == '{"a": 1}\n' and captured.err == "started\n"
