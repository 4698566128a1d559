"""Where unfork keeps its files: a bad location is a clear error, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from unfork.errors import UserError
from unfork.paths import get_paths


def test_a_home_of_an_unknown_user_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("UNFORK_HOME", "~nosuchuser-unfork/x")
    with pytest.raises(UserError) as err:
        get_paths()
    assert "UNFORK_HOME" in str(err.value) and "~nosuchuser-unfork/x" in str(err.value)


@pytest.mark.parametrize("below", ["", "sub/dir"])
def test_a_home_at_or_below_a_file_is_a_clear_error(tmp_path, monkeypatch, below):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("UNFORK_HOME", str(blocker / below) if below else str(blocker))
    with pytest.raises(UserError) as err:
        get_paths()
    assert "UNFORK_HOME" in str(err.value) and f"{blocker} is a file, not a folder" in str(err.value)


def test_an_xdg_folder_below_a_file_names_its_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("UNFORK_HOME")
    (tmp_path / "file").write_text("x")
    for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "file" / "share"))
    with pytest.raises(UserError) as err:
        get_paths()
    assert "XDG_DATA_HOME" in str(err.value) and str(tmp_path / "file") in str(err.value)


def test_folders_that_do_not_exist_yet_are_fine(tmp_path, monkeypatch):
    monkeypatch.setenv("UNFORK_HOME", str(tmp_path / "not" / "yet"))
    assert get_paths().data_dir == tmp_path / "not" / "yet" / "data"


def test_the_command_line_prints_the_error_without_a_traceback(tmp_path):
    (tmp_path / "file").write_text("x")
    env = {**os.environ, "UNFORK_HOME": str(tmp_path / "file" / "home"), "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-m", "unfork", "data", "list"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "is a file, not a folder" in done.stderr and "Traceback" not in done.stderr
