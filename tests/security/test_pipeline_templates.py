"""A contributed pipeline's templates cannot reach Python's internals (os.system) when they render."""

from __future__ import annotations

import pytest

from tests.sdg.test_pipeline import copy
from unfork.sdg.pipeline import PipelineError, load_pipeline
from unfork.sdg.steps import LLMStep

ESCAPES = [
    "{{{{ cycler.__init__.__globals__.os.system('touch {marker}') }}}}",
    "{{{{ (cycler|attr('__init__')).__globals__.os.system('touch {marker}') }}}}",
    "{{{{ cycler['__init__']['__globals__'].os.system('touch {marker}') }}}}",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_loading_refuses_a_template_that_reaches_for_internals(tmp_path, source):
    folder = copy(tmp_path, "simple")
    marker = tmp_path / "pwned"
    (folder / "skill_pairs.j2").write_text("{{ task_description }}\n" + source.format(marker=marker) + "\n")
    with pytest.raises(PipelineError) as err:
        load_pipeline(str(folder))
    assert "template 'skill_pairs.j2' line 2" in err.value.message
    assert "reaches into Python's internals" in err.value.message
    assert not marker.exists()


@pytest.mark.parametrize("source", [
    *ESCAPES,
    "{{{{ (cycler|attr('_' ~ '_init__')).__globals__.os.system('touch {marker}') }}}}",
])
def test_rendering_is_sandboxed(tmp_path, source):
    """Even a template the load-time check cannot see through (built names) fails to escape when it renders."""
    folder = copy(tmp_path, "simple")
    pipe = load_pipeline(str(folder))
    marker = tmp_path / "pwned"
    (folder / "skill_pairs.j2").write_text(source.format(marker=marker))
    step = next(s for s in pipe.build_steps("freeform_skill") if isinstance(s, LLMStep))
    with pytest.raises(PipelineError) as err:
        step._messages({"task_description": "t", "examples": [], "n": 1})
    assert str(folder / "skill_pairs.j2") in err.value.message
    assert not marker.exists()


def test_sandboxed_rendering_keeps_the_built_in_prompts(tmp_path):
    pipe = load_pipeline("simple")
    step = next(s for s in pipe.build_steps("freeform_skill") if isinstance(s, LLMStep))
    messages = step._messages({"task_description": "Write haiku.", "n": 6,
                               "examples": [{"question": "A haiku on rain", "answer": "Rain falls"}]})
    assert messages[-1]["content"].startswith("Write ") or "haiku" in messages[-1]["content"]
    assert type(pipe.templates).__name__ == "ImmutableSandboxedEnvironment"


@pytest.mark.parametrize("name", ["full", "simple"])
def test_built_in_templates_render_the_same_in_the_sandbox(name):
    """The sandbox keeps the built-in prompts byte for byte."""
    import jinja2
    from jinja2 import meta

    pipe = load_pipeline(name)
    plain = jinja2.Environment(loader=jinja2.FileSystemLoader(str(pipe.folder)), undefined=jinja2.StrictUndefined,
                               keep_trailing_newline=False, autoescape=False)
    row = {"question": "What is 2 + 2?", "answer": "4, as\nshown.", "context": " A context. ", "chunk": "A chunk."}
    rendered = 0
    for path in sorted(pipe.folder.glob("*.j2")):
        used = meta.find_undeclared_variables(plain.parse(path.read_text(encoding="utf-8")))
        values = {v: [row, {**row, "question": "Why?"}] if v in ("examples", "items") else 3 if v == "n"
                  else f"the {v}\n" for v in used}
        want = plain.get_template(path.name).render(**values)
        assert pipe.templates.get_template(path.name).render(**values) == want
        rendered += 1
    assert rendered >= 3
