"""The console that generation's progress and per-leaf table go to."""

from __future__ import annotations

from unfork.logs import stderr_console


def test_a_logged_run_gets_a_table_wide_enough_to_read(capsys):
    # under pytest stderr is captured, as in a log file or CI: not a terminal
    console = stderr_console()
    assert console.width == 120
    console.print("x" * 100)
    assert "x" * 100 in capsys.readouterr().err  # one line, not wrapped at 80
