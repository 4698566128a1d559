"""Layering: only the command line (unfork.cli) may use click; the library reports through callbacks."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import click

import unfork

SRC = Path(unfork.__file__).parent

WALK = r"""
import importlib, json, pkgutil, sys
import unfork

found, skipped = [], {}
names = sorted(m.name for m in pkgutil.walk_packages(unfork.__path__, "unfork.")
               if m.name != "unfork.__main__" and not m.name.startswith("unfork.cli"))
for name in names:
    try:
        importlib.import_module(name)
    except ImportError as exc:  # an optional extra that is not installed
        if (exc.name or "").startswith("unfork"):
            raise
        skipped[name] = exc.name
        continue
    if "click" in sys.modules:
        found.append(name)
        break
print(json.dumps({"names": names, "click": found, "skipped": skipped}))
"""


def test_no_module_outside_the_cli_imports_click():
    out = subprocess.run([sys.executable, "-c", WALK], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert "unfork.models.convert" in result["names"] and "unfork.taxonomy.output" in result["names"]
    assert result["click"] == [], f"{result['click'][0]} imports click (directly or through what it imports)"


def test_no_module_outside_the_cli_imports_click_even_inside_a_function():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path.relative_to(SRC).parts[0] == "cli":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "click" or n.startswith("click.") for n in names):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert offenders == []


def test_report_colours_are_the_escape_codes_click_writes():
    from unfork.taxonomy.output import style

    assert style("error", "red", bold=True) == click.style("error", fg="red", bold=True)
    assert style("warning", "yellow", bold=True) == click.style("warning", fg="yellow", bold=True)
    assert style("ok", "green") == click.style("ok", fg="green")
