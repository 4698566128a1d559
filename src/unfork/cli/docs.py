"""The command reference (docs/cli.md), rendered from every command's ``--help``.

Generated rather than written, so the reference says exactly what ``--help``
says; tests/test_cli_docs.py fails when the checked-in file has drifted.
Regenerate with ``python scripts/gen_cli_docs.py``.
"""

from __future__ import annotations

from pathlib import Path

DOCS_FILE = Path(__file__).resolve().parents[3] / "docs" / "cli.md"
REGENERATE = "python scripts/gen_cli_docs.py"
WIDTH = 88  # a fixed width, so the file does not depend on the terminal it was made in


def render() -> str:
    """Markdown with one section per group and command, in the order ``--help`` lists them."""
    from unfork.cli.main import cli

    out = ["# Command reference", "",
           f"<!-- Generated from --help by {REGENERATE}; do not edit by hand. -->", "",
           "Every command and group of `unfork`, with its `--help`. Global options (`-v`, `--debug`,",
           "`--log-file`) go before the command: `unfork -v data generate`.", ""]
    _walk(cli, "unfork", None, out)
    return "\n".join(out).rstrip("\n") + "\n"


def _walk(command, name: str, parent, out: list[str]) -> None:  # noqa: ANN001
    import click

    settings = {**command.context_settings, "terminal_width": WIDTH, "max_content_width": WIDTH}
    ctx = click.Context(command, info_name=name, parent=parent, **settings)
    depth = 1 + len(ctx.command_path.split())
    out += [f"{'#' * min(depth, 6)} {ctx.command_path}", "", "```text", command.get_help(ctx).rstrip(), "```", ""]
    if not isinstance(command, click.Group):
        return
    # list_commands leaves out aliases, so each command appears once, under its own group.
    for sub_name in command.list_commands(ctx):
        sub = command.get_command(ctx, sub_name)
        if sub is not None and not sub.hidden:
            _walk(sub, sub_name, ctx, out)


def write(path: Path = DOCS_FILE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(), encoding="utf-8")
    return path
