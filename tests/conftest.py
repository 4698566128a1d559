"""Shared fixtures.

Every test gets its own unfork home, so no test reads or writes the user's
files. Tests that need a real model find it where ``scripts/setup.sh``
downloaded it, in the unfork home that was in force before the tests started.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from unfork.paths import get_paths

REPO = Path(__file__).resolve().parents[1]
REAL_MODELS_DIR = get_paths().models_dir  # read before any fixture redirects UNFORK_HOME
IN_CI = bool(os.environ.get("CI"))


@pytest.fixture(autouse=True)
def unfork_home(tmp_path_factory, monkeypatch) -> Path:
    home = tmp_path_factory.mktemp("unfork-home")
    monkeypatch.setenv("UNFORK_HOME", str(home))
    for var in [v for v in os.environ if v.startswith("UNFORK_") and v != "UNFORK_HOME"
                and not v.startswith(("UNFORK_LLAMA", "UNFORK_TEST"))]:
        monkeypatch.delenv(var)
    return home


def missing(reason: str):
    """Skip on a developer machine; fail in CI, where scripts/setup.sh --dev must have provided it."""
    if IN_CI:
        pytest.fail(f"{reason} (CI runs scripts/setup.sh --dev, which should provide it)")
    pytest.skip(reason)


def real_model_file(name: str) -> Path:
    """The downloaded file of a catalog model (GGUF), or skip/fail with how to get it."""
    folder = REAL_MODELS_DIR / name
    found = sorted(folder.glob("*.gguf")) if folder.is_dir() else []
    if not found:
        missing(f"model {name} is not downloaded: run '.venv/bin/unfork model download {name}'")
    return found[0]


def real_llama_server() -> Path:
    """llama.cpp's llama-server as built by scripts/build_llama_cpp.sh, or skip/fail with how to build it."""
    from unfork.errors import UserError
    from unfork.serve.llama_cpp import find_llama_server

    try:
        return Path(find_llama_server())
    except UserError:
        missing("llama-server is not built: run scripts/build_llama_cpp.sh")
