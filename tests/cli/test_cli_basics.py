from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from unfork import __version__
from unfork.cli.main import GROUPS, cli


def run(*args, **kw):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, **kw)


def test_version():
    result = run("--version")
    assert result.exit_code == 0 and __version__ in result.output


@pytest.mark.parametrize("group", [None, *GROUPS])
def test_help_does_not_import_heavy_libraries(group):
    args = ["--help"] if group is None else [group, "--help"]
    code = (
        f"import sys; from unfork.cli.main import main; sys.argv = ['unfork', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'httpx', 'numpy', 'rich', 'pydantic', 'uvicorn') if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "Usage:" in out
    assert out.strip().splitlines()[-1] == "HEAVY []"


def test_config_init_show_and_precedence(unfork_home, monkeypatch):
    result = run("config", "init", "--non-interactive")
    assert result.exit_code == 0, result.output
    cfg_file = unfork_home / "config" / "config.yaml"
    assert cfg_file.exists() and "# " in cfg_file.read_text()
    assert (unfork_home / "data").is_dir() and (unfork_home / "cache" / "models").is_dir()
    # a second init refuses to overwrite without --force
    again = CliRunner().invoke(cli, ["config", "init", "--non-interactive"])
    assert again.exit_code != 0 and "--force" in again.output
    cfg_file.write_text(cfg_file.read_text().replace("port: 8000", "port: 8123"))
    shown = yaml.safe_load(run("config", "show").output)
    assert shown["serve"]["port"] == 8123
    monkeypatch.setenv("UNFORK_SERVE_PORT", "8124")
    assert yaml.safe_load(run("config", "show").output)["serve"]["port"] == 8124


def test_config_show_reports_mistyped_key_without_traceback(unfork_home):
    cfg_file = unfork_home / "config" / "config.yaml"
    cfg_file.parent.mkdir(parents=True)
    cfg_file.write_text("chat:\n  temprature: 0.2\n")
    proc = subprocess.run([sys.executable, "-m", "unfork", "config", "show"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "chat.temprature" in proc.stderr and "chat.temperature" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_config_edit_uses_editor_and_checks(unfork_home, monkeypatch, tmp_path):
    run("config", "init", "--non-interactive")
    script = tmp_path / "ed.sh"
    script.write_text("#!/bin/sh\nsed -i 's/port: 8000/port: 8555/' \"$1\"\n")
    script.chmod(0o755)
    monkeypatch.setenv("EDITOR", str(script))
    result = run("config", "edit")
    assert result.exit_code == 0 and "valid" in result.output
    assert yaml.safe_load(run("config", "show").output)["serve"]["port"] == 8555


def test_system_info_json():
    data = json.loads(run("system", "info", "--json").output)
    assert data["cpu"]["cores"] >= 1 and data["python"].startswith("3.")
    assert "torch" in data["backends"]
