from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _unfork_home(tmp_path, monkeypatch):
    monkeypatch.setenv("UNFORK_HOME", str(tmp_path / "home"))
