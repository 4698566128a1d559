#!/usr/bin/env python3
"""Regenerate docs/cli.md from every command's --help (tests/test_cli_docs.py checks it is current)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # the checkout's unfork, even uninstalled

from unfork.cli.docs import write  # noqa: E402

if __name__ == "__main__":
    print(f"Wrote {write()}")
