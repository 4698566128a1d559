"""Crashes the fuzzers found, each pinned by the input that showed it."""

from __future__ import annotations

import shutil

import pytest

from tests.fuzz import properties, strategies
from unfork.config import ConfigError, load_config, read_settings
from unfork.sdg.pipeline import BUILTIN_DIR, PipelineError, load_pipeline

SKILL = ("version: 2\ncreated_by: ada\ntask_description: Write short poems.\nseed_examples:\n"
         + "".join(f"- {{question: Q{i}?, answer: A{i}.}}\n" for i in range(5)))
BOMB_LIST = strategies.ALIAS_BOMB.replace("  -", "    -")


def test_seed_example_with_mixed_key_types_is_a_report():
    # The uniqueness check sorted the keys of each example as JSON: 0 beside '' raised TypeError.
    text = SKILL + "- {? '' : '', 0: null}\n"
    assert properties.check_validate("compositional_skills/writing/qna.yaml", text.encode()) == 1


@pytest.mark.parametrize("version", ["!!timestamp x", "!!int", "!!bool x", "!!float _"])
def test_a_bad_explicit_tag_is_a_report(version):
    text = SKILL.replace("version: 2", f"version: {version}")
    assert properties.check_validate("compositional_skills/writing/qna.yaml", text.encode()) in (0, 1)


@pytest.mark.parametrize("text, where", [(b"\x00", ":1:1:"), ("éé: b\nc\x01".encode(), ":2:2:")])
def test_config_with_a_forbidden_character_names_its_line(tmp_path, text, where):
    path = tmp_path / "config.yaml"
    path.write_bytes(text)
    with pytest.raises(ConfigError, match=f"{path}{where} not valid YAML"):
        read_settings(path)


@pytest.mark.parametrize("text", ["!!int", "(: !!int", "train: {epochs: !!timestamp x}", "a: !!bool x"])
def test_config_with_a_bad_tag_is_a_config_error(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=str(path)):
        read_settings(path)


@pytest.mark.parametrize("text", ["taxonomy:\n  base:\n" + BOMB_LIST, "generate:\n  mix:\n    a:\n" + BOMB_LIST,
                                  "taxonomy:\n  base: &a [*a]\n"])
def test_config_alias_bomb_is_refused_before_it_is_expanded(tmp_path, text):
    # The error message's repr (or 'config show') walked all 9**9 values.
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with properties.time_limit(10), pytest.raises(ConfigError, match="aliases"):
        read_settings(path)


@pytest.mark.parametrize("value", ["!!int", "{a: &x [*x]}", "a: &b [lol]\nc: [*b, *b]"])
def test_mix_from_the_environment_with_bad_yaml(value):
    env = {"UNFORK_GENERATE_MIX": value}
    if value.startswith("a:"):  # a small alias is fine
        assert load_config(environ=env).generate.mix["c"] == [["lol"], ["lol"]]
        return
    with pytest.raises(ConfigError, match="UNFORK_GENERATE_MIX"):
        load_config(environ=env)


def _pipeline(tmp_path, old: str, new: str):
    folder = tmp_path / "pipe"
    shutil.copytree(BUILTIN_DIR / "simple", folder)
    text = (folder / "pipeline.yaml").read_text()
    assert old in text
    (folder / "pipeline.yaml").write_text(text.replace(old, new, 1))
    return folder


@pytest.mark.parametrize("old, new", [
    ("type: sample", "type: [sample]"),  # unhashable: TypeError
    ("template: skill_pairs.j2", "template: !!set {a, b}"),  # the loader split a set: AttributeError
    ("template: skill_pairs.j2", "template: !!binary aGVsbG8="),  # bytes: TypeError
    ("samples_per_unit: 16", "samples_per_unit: !!int"),  # PyYAML's IndexError
    ("name: simple", "name: simple\nbomb:\n" + strategies.ALIAS_BOMB + "bombed: [*l9]"),
    ("reads: [seed_examples]", "reads: &r [*r]"),
])
def test_pipeline_crashes_found_are_pipeline_errors(tmp_path, old, new):
    folder = _pipeline(tmp_path, old, new)
    with properties.time_limit(10), pytest.raises(PipelineError, match=str(folder)):
        load_pipeline(str(folder))
