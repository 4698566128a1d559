"""Printing validation reports as text, JSON lines or GitHub Actions annotations."""

from __future__ import annotations

import click

from unfork.taxonomy.messages import FileReport, Message


def _github_escape(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def format_message(report: FileReport, m: Message, fmt: str, color: bool = False) -> str:
    where = f"[{m.yaml_path}] " if m.yaml_path not in ("", ".") and f"'{m.yaml_path}'" not in m.message else ""
    if fmt == "github":
        level = "error" if m.severity == "error" else "warning"
        body = _github_escape(f"{m.line}:{m.column} {where}{m.message} ({m.rule}). Hint: {m.hint}")
        return f"::{level} file={report.path},line={m.line},col={m.column},title={m.rule}::{body}"
    label = m.severity
    if color:
        label = click.style(label, fg="red" if m.severity == "error" else "yellow", bold=True)
    text = f"{report.path}:{m.line}:{m.column}: {label} {where}{m.message} [{m.rule}]"
    if m.hint:
        text += f"\n    hint: {m.hint}"
    return text


def print_reports(reports: list[FileReport], fmt: str, *, quiet: bool = False, color: bool = False) -> int:
    """Print every report; return the exit status (1 if any file has errors)."""
    failed = sum(1 for r in reports if r.errors)
    if fmt == "json":
        for r in reports:
            click.echo(r.to_json())
        return 1 if failed else 0
    for r in reports:
        if fmt == "text" and not quiet and not r.errors and not r.warnings:
            click.echo(f"{r.path}: ok ({r.kind}, version {r.version})")
        for m in r.errors + r.warnings:
            click.echo(format_message(r, m, fmt, color))
    if fmt == "text":
        warnings = sum(len(r.warnings) for r in reports)
        errors = sum(len(r.errors) for r in reports)
        summary = (f"{len(reports)} file{'s' * (len(reports) != 1)} checked: {len(reports) - failed} valid, "
                   f"{failed} with errors ({errors} errors, {warnings} warnings)")
        click.echo(click.style(summary, fg="red" if failed else "green") if color else summary)
    return 1 if failed else 0
