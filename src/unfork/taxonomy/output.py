"""Printing validation reports as text, JSON lines or GitHub Actions annotations."""

from __future__ import annotations

import sys
from collections.abc import Callable

from unfork.taxonomy.messages import FileReport, Message

# callback(one line of output), so the caller decides where it goes
Echo = Callable[[str], None]

_ANSI = {"red": "\x1b[31m", "green": "\x1b[32m", "yellow": "\x1b[33m"}
_BOLD, _RESET = "\x1b[1m", "\x1b[0m"


def style(text: str, fg: str, bold: bool = False) -> str:
    """``text`` in a terminal colour (the same escape codes as click.style)."""
    return f"{_ANSI[fg]}{_BOLD if bold else ''}{text}{_RESET}"


def echo_stdout(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _github_escape(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _github_property(text: str) -> str:
    """GitHub's escaping for a workflow command's property, so a file name cannot end the command."""
    return _github_escape(text).replace(":", "%3A").replace(",", "%2C")


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7f, 0xa0))}


def visible(text: str) -> str:
    """``text`` with control characters written as ``\\x1b``, so a file cannot drive the terminal."""
    return text.translate(_CONTROL)


def format_message(report: FileReport, m: Message, fmt: str, color: bool = False) -> str:
    where = f"[{m.yaml_path}] " if m.yaml_path not in ("", ".") and f"'{m.yaml_path}'" not in m.message else ""
    if fmt == "github":
        level = "error" if m.severity == "error" else "warning"
        body = _github_escape(f"{m.line}:{m.column} {where}{m.message} ({m.rule}). Hint: {m.hint}")
        return (f"::{level} file={_github_property(report.path)},line={m.line},col={m.column},"
                f"title={_github_property(m.rule)}::{body}")
    label = m.severity
    if color:
        label = style(label, fg="red" if m.severity == "error" else "yellow", bold=True)
    text = f"{visible(report.path)}:{m.line}:{m.column}: {label} {visible(where + m.message)} [{visible(m.rule)}]"
    if m.hint:
        text += f"\n    hint: {visible(m.hint)}"
    return text


def print_reports(reports: list[FileReport], fmt: str, *, quiet: bool = False, color: bool = False,
                  echo: Echo = echo_stdout) -> int:
    """Print every report, a line at a time through ``echo``; return the exit status (1 if any file has errors)."""
    failed = sum(1 for r in reports if r.errors)
    if fmt == "json":
        for r in reports:
            echo(r.to_json())
        return 1 if failed else 0
    for r in reports:
        if fmt == "text" and not quiet and not r.errors and not r.warnings:
            echo(f"{visible(r.path)}: ok ({r.kind}, version {r.version})")
        for m in r.errors + r.warnings:
            echo(format_message(r, m, fmt, color))
    if fmt == "text":
        warnings = sum(len(r.warnings) for r in reports)
        errors = sum(len(r.errors) for r in reports)
        summary = (f"{len(reports)} file{'s' * (len(reports) != 1)} checked: {len(reports) - failed} valid, "
                   f"{failed} with errors ({errors} errors, {warnings} warnings)")
        echo(style(summary, fg="red" if failed else "green") if color else summary)
    return 1 if failed else 0
