"""A pipeline's numbers and names are checked when it loads, with the file, line and field in the error."""

from __future__ import annotations

import pytest

from tests.sdg.test_pipeline import copy, edit
from unfork.sdg.pipeline import PipelineError, load_pipeline


def line_of(folder, text):
    lines = (folder / "pipeline.yaml").read_text().splitlines()
    return next(i for i, line in enumerate(lines, start=1) if text in line)


@pytest.mark.parametrize("bad", ["0", "-3", "abc", "true", ".nan", "[1]"])
def test_samples_per_unit_must_be_above_zero(tmp_path, bad):
    folder = copy(tmp_path, "simple")
    edit(folder, "samples_per_unit: 16", f"samples_per_unit: {bad}")
    with pytest.raises(PipelineError) as err:
        load_pipeline(str(folder))
    line = line_of(folder, f"samples_per_unit: {bad}")
    assert f"pipeline.yaml, line {line}: flow 'freeform_skill': 'samples_per_unit' must be a number above 0" \
        in err.value.message


def test_max_units_factor_must_be_above_zero(tmp_path):
    folder = copy(tmp_path, "simple")
    edit(folder, "samples_per_unit: 16", "samples_per_unit: 16\n    max_units_factor: -1")
    with pytest.raises(PipelineError, match="flow 'freeform_skill': 'max_units_factor' must be a number above 0"):
        load_pipeline(str(folder))


@pytest.mark.parametrize("bad", ["[1, 2]", "3", "text"])
def test_mix_must_be_a_mapping(tmp_path, bad):
    folder = copy(tmp_path, "simple")
    text = (folder / "pipeline.yaml").read_text()
    start = text.index("mix:\n")
    end = text.index("\nflows:")
    (folder / "pipeline.yaml").write_text(text[:start] + f"mix: {bad}\n" + text[end:])
    with pytest.raises(PipelineError) as err:
        load_pipeline(str(folder))
    assert f"pipeline.yaml, line {line_of(folder, 'mix:')}: 'mix' must be a mapping" in err.value.message


def test_a_latin_1_pipeline_file_is_a_clear_error(tmp_path):
    folder = copy(tmp_path, "simple")
    path = folder / "pipeline.yaml"
    path.write_bytes(path.read_bytes().replace(b"# unfork's simple", "# unfork's simplé".encode("latin-1")))
    with pytest.raises(PipelineError, match=r"pipeline.yaml: not UTF-8 text \(byte 0xe9 at offset \d+\)"):
        load_pipeline(str(folder))


def test_a_latin_1_template_is_a_clear_error(tmp_path):
    folder = copy(tmp_path, "simple")
    (folder / "skill_pairs.j2").write_bytes("{{ task_description }} café".encode("latin-1"))
    with pytest.raises(PipelineError, match=r"template 'skill_pairs.j2' is not UTF-8 text"):
        load_pipeline(str(folder))


@pytest.mark.parametrize(("old", "new", "message"), [
    ("parser: labeled", "parser: labelled", "'parser' must be one of labeled, numbered_list, tagged, text"),
    ("temperature: 1.0", "temperature: hot", "'temperature' must be a number of at least 0, not 'hot'"),
    ("temperature: 1.0", "temperature: -0.5", "'temperature' must be a number of at least 0, not -0.5"),
    ("k: 0}", "k: two}", "'k' must be a whole number of at least 0 (0: all), not 'two'"),
    ("k: 0}", "k: -1}", "'k' must be a whole number of at least 0 (0: all), not -1"),
    ("threshold: 0.7, ignore", "threshold: 7, ignore", "'threshold' must be a number above 0 and at most 1, not 7"),
    ("threshold: 0.7, ignore", "threshold: high, ignore", "'threshold' must be a number above 0 and at most 1"),
])
def test_step_options_are_checked_with_the_line(tmp_path, old, new, message):
    folder = copy(tmp_path, "simple")
    edit(folder, old, new)
    with pytest.raises(PipelineError) as err:
        load_pipeline(str(folder))
    assert f"pipeline.yaml, line {line_of(folder, new)}: step '" in err.value.message
    assert "(flow freeform_skill)" in err.value.message
    assert message in err.value.message


@pytest.mark.parametrize(("old", "new", "message"), [
    ("parser: scores\n        threshold: 2", "parser: labeled\n        threshold: 2",
     "'parser' must be one of scores, verdicts"),
    ("threshold: 2", "threshold: two", "'threshold' must be a number of at least 0, not 'two'"),
])
def test_judge_options_are_checked(tmp_path, old, new, message):
    folder = copy(tmp_path, "full")
    edit(folder, old, new)
    with pytest.raises(PipelineError, match="step 'judge_questions' \\(flow freeform_skill\\)") as err:
        load_pipeline(str(folder))
    assert message in err.value.message
