"""docs/cli.md is the --help of every command: it fails here as soon as a --help changes without it."""

from __future__ import annotations

import difflib

from unfork.cli.docs import DOCS_FILE, REGENERATE, render


def test_the_command_reference_matches_the_help():
    fresh = render()
    saved = DOCS_FILE.read_text(encoding="utf-8") if DOCS_FILE.is_file() else ""
    if fresh != saved:
        diff = "".join(difflib.unified_diff(saved.splitlines(True), fresh.splitlines(True), "docs/cli.md",
                                            "--help", n=1))
        raise AssertionError(f"docs/cli.md is out of date with --help: run '{REGENERATE}'\n{diff[:3000]}")


def test_the_reference_has_every_command_once_and_no_alias():
    from click.testing import CliRunner

    from unfork.cli.main import cli

    text = render()
    headings = [line.split(" ", 1)[1] for line in text.splitlines() if line.startswith("#") and " unfork" in line]
    assert len(headings) == len(set(headings))
    for name in ("unfork model chat", "unfork data generate", "unfork taxonomy validate", "unfork run"):
        assert name in headings
    assert "unfork chat" not in headings  # an alias of unfork model chat, documented there
    # Each section is what --help prints for that command.
    served = CliRunner().invoke(cli, ["model", "serve", "--help"], prog_name="unfork", terminal_width=88,
                                max_content_width=88).output
    section = text.split("## unfork model serve\n\n```text\n", 1)[1].split("```", 1)[0]
    assert "--startup-timeout" in served and section == served
