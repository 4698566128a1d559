from __future__ import annotations

import pytest
import yaml

from unfork import config as C
from unfork.paths import get_paths


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_without_file():
    cfg = C.load_config(environ={})
    assert cfg.serve.port == 8000
    assert cfg.serve.host == "127.0.0.1"
    assert cfg.chat_model() == cfg.models.teacher == "qwen2.5-coder-1.5b-instruct"


def test_precedence_defaults_file_env_flags(tmp_path):
    f = write(tmp_path / "c.yaml", "serve:\n  port: 9000\n  parallel: 2\nchat:\n  temperature: 0.1\n")
    cfg = C.load_config(f, environ={})
    assert (cfg.serve.port, cfg.serve.parallel, cfg.chat.temperature) == (9000, 2, 0.1)
    cfg = C.load_config(f, environ={"UNFORK_SERVE_PORT": "9100"})
    assert (cfg.serve.port, cfg.serve.parallel) == (9100, 2)
    cfg = C.load_config(f, overrides={"serve.port": 9200, "serve.parallel": None},
                        environ={"UNFORK_SERVE_PORT": "9100"})
    assert (cfg.serve.port, cfg.serve.parallel) == (9200, 2)


def test_unknown_key_names_closest(tmp_path):
    f = write(tmp_path / "c.yaml", "serve:\n  prot: 9000\n")
    with pytest.raises(C.ConfigError) as err:
        C.load_config(f, environ={})
    assert "serve.prot" in str(err.value) and "serve.port" in err.value.hint


def test_unknown_section_names_closest(tmp_path):
    f = write(tmp_path / "c.yaml", "serv:\n  port: 9000\n")
    with pytest.raises(C.ConfigError) as err:
        C.load_config(f, environ={})
    assert "'serv'" in str(err.value) and "serve" in err.value.hint


def test_unknown_env_var_names_closest():
    with pytest.raises(C.ConfigError) as err:
        C.load_config(environ={"UNFORK_SERVE_PROT": "1"})
    assert "UNFORK_SERVE_PORT" in err.value.hint


@pytest.mark.parametrize("text,fragment", [
    ("serve:\n  port: eighty\n", "whole number"),
    ("serve:\n  backend: llamacpp\n", "not one of"),
    ("chat:\n  markdown: maybe\n", "true or false"),
    ("serve: [1, 2]\n", "must be a mapping"),
    ("serve:\n  port: [\n", "not valid YAML"),
])
def test_bad_values_are_clear(tmp_path, text, fragment):
    f = write(tmp_path / "c.yaml", text)
    with pytest.raises(C.ConfigError) as err:
        C.load_config(f, environ={})
    assert fragment in str(err.value) and str(f) in str(err.value)


def test_list_from_env_and_file(tmp_path):
    cfg = C.load_config(environ={"UNFORK_GENERATE_ENDPOINT_URLS": "http://a/v1, http://b/v1"})
    assert cfg.generate.endpoint_urls == ["http://a/v1", "http://b/v1"]


def test_rendered_file_round_trips_and_documents_every_field():
    text = C.render_config_file()
    data = yaml.safe_load(text)
    assert data == C.to_dict(C.Config())
    for section, typ in C._SECTION_TYPES.items():
        for name in typ.__dataclass_fields__:
            assert C.env_var(section, name) in text


def test_unfork_home_relocates_everything(tmp_path, monkeypatch):
    monkeypatch.setenv("UNFORK_HOME", str(tmp_path))
    p = get_paths()
    assert p.config_file == tmp_path / "config" / "config.yaml"
    assert p.models_dir.is_relative_to(tmp_path) and p.data_dir.is_relative_to(tmp_path)


def test_xdg_locations(tmp_path, monkeypatch):
    monkeypatch.delenv("UNFORK_HOME")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    p = get_paths()
    assert p.config_file == tmp_path / "cfg" / "unfork" / "config.yaml"
    assert p.data_dir == tmp_path / "data" / "unfork"
    assert p.models_dir == tmp_path / "cache" / "unfork" / "models"
