"""Shared fixtures: every test gets its own unfork home, so no test reads or writes the user's files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def unfork_home(tmp_path_factory, monkeypatch) -> Path:
    home = tmp_path_factory.mktemp("unfork-home")
    monkeypatch.setenv("UNFORK_HOME", str(home))
    for var in [v for v in os.environ if v.startswith("UNFORK_") and v != "UNFORK_HOME"
                and not v.startswith(("UNFORK_LLAMA", "UNFORK_TEST"))]:
        monkeypatch.delenv(var)
    return home
