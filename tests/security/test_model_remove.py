"""``unfork model remove`` deletes only a model folder the store made, never what a name points above or beside."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from unfork.cli.main import cli
from unfork.models import store
from unfork.paths import get_paths


def run(*args: str):
    return CliRunner().invoke(cli, ["model", *args])


@pytest.fixture
def cache():
    """A cache folder with a model, documents and a generation cache in it."""
    paths = get_paths()
    model = store.models_dir() / "m"
    store.write_manifest(model, {"name": "m", "format": "gguf", "file": "m.gguf"})
    (model / "m.gguf").write_bytes(b"GGUF")
    (paths.cache_dir / "documents").mkdir(parents=True)
    (paths.cache_dir / "documents" / "doc.md").write_text("keep me")
    return paths.cache_dir


@pytest.mark.parametrize("name", ["..", "../documents", "m/..", "./..", "../models/../documents"])
def test_a_name_that_leaves_the_models_folder_deletes_nothing(cache, name):
    result = run("remove", "-y", name)
    assert result.exit_code != 0
    assert "no stored model" in result.exception.message
    assert (cache / "documents" / "doc.md").read_text() == "keep me"
    assert (store.models_dir() / "m" / "m.gguf").is_file()


def test_an_absolute_path_is_not_a_model_name(cache):
    assert store.removable(str(cache / "documents")) == []
    assert store.removable(str(store.models_dir() / "m")) == []


def test_a_symlink_in_the_models_folder_is_not_followed(cache, tmp_path):
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "model.json").write_text("{}")
    (outside / "config.json").write_text("{}")
    (store.models_dir() / "link").symlink_to(outside, target_is_directory=True)
    result = run("remove", "-y", "link")
    assert result.exit_code != 0
    assert (outside / "model.json").is_file() and (store.models_dir() / "link").is_symlink()


def test_a_folder_the_store_did_not_make_is_left_alone(cache):
    stray = store.models_dir() / "notes"
    stray.mkdir()
    (stray / "todo.txt").write_text("mine")
    assert store.removable("notes") == []
    assert (stray / "todo.txt").is_file()


def test_a_model_folder_is_still_removed(cache):
    assert store.removable("m") == [store.models_dir() / "m"]
    result = run("remove", "-y", "m")
    assert result.exit_code == 0, result.output
    assert not (store.models_dir() / "m").exists()
    assert (cache / "documents" / "doc.md").is_file()
