"""A shared pipeline folder's templates cannot name a file outside the folder."""

from __future__ import annotations

import jinja2
import pytest

from tests.sdg.test_pipeline import copy, edit
from unfork.sdg.pipeline import PipelineError, load_pipeline
from unfork.sdg.steps import LLMStep

SECRET = "the maintainer's private notes\n"
ROW = {"task_description": "t", "examples": [], "n": 1}


def _secret(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_text(SECRET)
    return path


def _first_llm_step(folder):
    pipe = load_pipeline(str(folder))
    return next(s for s in pipe.build_steps("freeform_skill") if isinstance(s, LLMStep))


@pytest.mark.parametrize("name", ["../secret.txt", "sub/../../secret.txt"])
def test_a_template_name_that_leaves_the_folder_is_refused(tmp_path, name):
    _secret(tmp_path)
    folder = copy(tmp_path, "simple")
    edit(folder, "template: skill_pairs.j2", f"template: {name}")
    with pytest.raises(PipelineError, match="not found") as err:
        load_pipeline(str(folder))
    assert SECRET.strip() not in err.value.message


def test_an_include_that_leaves_the_folder_reads_nothing(tmp_path):
    _secret(tmp_path)
    folder = copy(tmp_path, "simple")
    step = _first_llm_step(folder)
    (folder / "skill_pairs.j2").write_text('{% include "../secret.txt" %}')
    with pytest.raises((jinja2.TemplateNotFound, PipelineError)) as err:
        step._messages(ROW)
    assert SECRET.strip() not in str(err.value)


def test_a_template_that_is_a_link_out_of_the_folder_is_not_read(tmp_path):
    secret = _secret(tmp_path)
    folder = copy(tmp_path, "simple")
    (folder / "skill_pairs.j2").unlink()
    (folder / "skill_pairs.j2").symlink_to(secret)
    try:
        messages = _first_llm_step(folder)._messages(ROW)
    except PipelineError:
        return
    assert all(SECRET.strip() not in m["content"] for m in messages)
