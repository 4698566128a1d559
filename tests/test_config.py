from __future__ import annotations

from pathlib import Path

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


def test_new_generate_settings_from_file_env_and_flags(tmp_path):
    f = write(tmp_path / "c.yaml", "generate:\n  knowledge_samples: 40\n  mix:\n    knowledge_raft: false\n"
                                   "  request_timeout: 30\n")
    cfg = C.load_config(f, environ={"UNFORK_GENERATE_ENDPOINT_MODEL": "big", "UNFORK_GENERATE_CTX_PER_SLOT": "4096"})
    g = cfg.generate
    assert (g.knowledge_samples, g.mix, g.request_timeout) == (40, {"knowledge_raft": False}, 30.0)
    assert (g.endpoint_model, g.ctx_per_slot, g.api_key) == ("big", 4096, "")
    cfg = C.load_config(f, environ={"UNFORK_GENERATE_MIX": "{knowledge_raft: true, raft_distractors: 2}"},
                        overrides={"generate.knowledge_samples": 5})
    assert cfg.generate.mix == {"knowledge_raft": True, "raft_distractors": 2}
    assert cfg.generate.knowledge_samples == 5
    assert C.Config().generate.mix == {} and C.Config().generate.mix is not C.Config().generate.mix


@pytest.mark.parametrize("raw", ["[1, 2]", "{a: [", "plain words"])
def test_a_mapping_setting_refuses_other_values(raw):
    with pytest.raises(C.ConfigError) as err:
        C.load_config(environ={"UNFORK_GENERATE_MIX": raw})
    assert "UNFORK_GENERATE_MIX" in str(err.value) and "expected a mapping" in str(err.value)


def test_the_main_profile_holds_the_main_jobs_settings():
    assert C.load_profile("main") == {
        "generate.pipeline": "simple", "generate.num_samples": 10, "generate.knowledge_samples": 60,
        "generate.mix": {"knowledge_raft": False}, "train.epochs": 3, "train.knowledge_epochs": 8,
        "train.method": "full", "train.learning_rate": 3e-4, "train.keep_epoch": "last",
        "train.micro_batch_tokens": 1024}


def test_a_profile_is_checked_like_the_config_file(tmp_path, monkeypatch):
    write(tmp_path / "typo.yaml", "train:\n  epoch: 3\n")
    monkeypatch.setattr(C, "PROFILES_DIR", tmp_path)
    with pytest.raises(C.ConfigError) as err:
        C.load_profile("typo")
    assert "train.epoch" in str(err.value) and "train.epochs" in err.value.hint
    with pytest.raises(C.ConfigError) as err:
        C.load_profile("nope")
    assert "no profile 'nope'" in str(err.value) and "typo" in err.value.hint


def _shipped(pattern: str) -> list:
    import unfork

    return sorted(Path(unfork.__file__).parent.glob(pattern))


def test_every_shipped_settings_file_loads(tmp_path):
    from unfork.sdg.pipeline import load_pipeline

    profiles = _shipped("profiles/*.yaml")
    assert profiles, "no profile found in the package"
    for path in profiles:
        assert C.load_profile(path.stem) == C.read_settings(path) != {}
    pipelines = _shipped("sdg/pipelines/*/pipeline.yaml")
    assert {p.parent.name for p in pipelines} >= {"full", "simple"}
    for path in pipelines:
        assert load_pipeline(str(path.parent)).flows
    # the example config: what 'unfork config init' writes
    example = write(tmp_path / "config.yaml", C.render_config_file())
    assert C.to_dict(C.load_config(example, environ={})) == C.to_dict(C.Config())
    assert not [p for p in _shipped("**/*.yaml") if "taxonomy" not in p.parts
                and p not in profiles and p not in pipelines], "a shipped YAML file that no test loads"


# ------------------------------------------------------------------------------- files that are no config file


def test_a_config_file_that_is_a_fifo_is_refused_at_once(tmp_path):
    import os
    import threading

    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    errors: list[Exception] = []

    def load():
        try:
            C.load_config(fifo, environ={})
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            errors.append(exc)

    reader = threading.Thread(target=load, daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "a FIFO config file hangs"
    assert isinstance(errors[0], C.ConfigError) and str(fifo) in str(errors[0]) and "FIFO" in str(errors[0])


def test_a_config_file_that_is_a_folder_is_a_clear_error(tmp_path):
    folder = tmp_path / "config.yaml"
    folder.mkdir()
    with pytest.raises(C.ConfigError) as err:
        C.load_config(folder, environ={})
    assert str(folder) in str(err.value) and "folder" in str(err.value)


# ------------------------------------------------------------------------------- numbers in range


@pytest.mark.parametrize("text,fragment", [
    ("serve:\n  port: .inf\n", "serve.port: expected a whole number, got inf"),
    ("serve:\n  port: -1\n", "serve.port: -1 is out of range: it must be between 1 and 65535"),
    ("serve:\n  port: 70000\n", "serve.port: 70000 is out of range"),
    ("train:\n  learning_rate: .nan\n", "train.learning_rate: expected a finite number, got nan"),
    ("train:\n  learning_rate: -.inf\n", "train.learning_rate: expected a finite number"),
    ("train:\n  epochs: 100000000000000000000000000000\n", "train.epochs: 100000000000000000000000000000 is out"),
    ("train:\n  replay_fraction: 1.5\n", "between 0 and 1"),
    ("chat:\n  temperature: -0.1\n", "chat.temperature"),
    ("generate:\n  num_samples: 0\n", "generate.num_samples: 0 is out of range"),
])
def test_numbers_out_of_range_in_the_file_name_the_file_and_key(tmp_path, text, fragment):
    f = write(tmp_path / "c.yaml", text)
    with pytest.raises(C.ConfigError) as err:
        C.load_config(f, environ={})
    assert fragment in str(err.value) and str(f) in str(err.value)


@pytest.mark.parametrize("var,raw", [("UNFORK_SERVE_PORT", "70000"), ("UNFORK_SERVE_PORT", "inf"),
                                     ("UNFORK_TRAIN_LEARNING_RATE", "nan"), ("UNFORK_TRAIN_EPOCHS", "1" + "0" * 29),
                                     ("UNFORK_GENERATE_REQUEST_TIMEOUT", "1e400")])
def test_numbers_out_of_range_in_the_environment_name_the_variable(var, raw):
    with pytest.raises(C.ConfigError) as err:
        C.load_config(environ={var: raw})
    assert f"environment variable {var}:" in str(err.value)


@pytest.mark.parametrize("key,value", [("serve.port", 0), ("train.epochs", 10 ** 29),
                                       ("train.learning_rate", float("nan")), ("generate.max_concurrency", -3)])
def test_numbers_out_of_range_in_a_flag_name_the_flag(key, value):
    with pytest.raises(C.ConfigError) as err:
        C.load_config(environ={}, overrides={key: value})
    assert f"option --{key.split('.')[1].replace('_', '-')}:" in str(err.value)


def test_the_ends_of_a_range_are_accepted(tmp_path):
    f = write(tmp_path / "c.yaml", "serve:\n  port: 65535\ntrain:\n  replay_fraction: 1\n  knowledge_epochs: 0\n")
    cfg = C.load_config(f, environ={"UNFORK_CHAT_TEMPERATURE": "0"}, overrides={"serve.parallel": 1})
    assert (cfg.serve.port, cfg.train.replay_fraction, cfg.train.knowledge_epochs) == (65535, 1.0, 0)
    assert (cfg.chat.temperature, cfg.serve.parallel) == (0.0, 1)


def test_every_number_has_a_range_that_holds_its_default():
    import dataclasses

    for section, typ in C._SECTION_TYPES.items():
        for f in dataclasses.fields(typ):
            if C.field_type(section, f.name) in (int, float):
                lo, hi = f.metadata.get("min"), f.metadata.get("max")
                assert lo is not None and hi is not None, f"{section}.{f.name} has no range"
                assert lo <= getattr(typ(), f.name) <= hi, f"{section}.{f.name}"
