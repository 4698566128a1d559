import shutil

import pytest

from unfork.sdg.pipeline import BUILTIN_DIR, PipelineError, load_pipeline


@pytest.mark.parametrize("name", ["full", "simple"])
def test_builtin_pipelines_load_and_pass_the_check(name):
    pipe = load_pipeline(name)
    assert set(pipe.flows) == {"freeform_skill", "grounded_skill", "knowledge"}
    assert len(pipe.hash) == 64
    assert pipe.mix["system_prompt"]


def copy(tmp_path, name="full"):
    dest = tmp_path / "mine"
    shutil.copytree(BUILTIN_DIR / name, dest)
    return dest


def edit(folder, old, new):
    path = folder / "pipeline.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_a_copied_folder_loads_and_its_hash_follows_the_prompts(tmp_path):
    folder = copy(tmp_path)
    assert load_pipeline(str(folder)).hash == load_pipeline("full").hash
    (folder / "judge_pairs.j2").write_text((folder / "judge_pairs.j2").read_text() + "\nBe strict.\n")
    assert load_pipeline(str(folder)).hash != load_pipeline("full").hash


def test_reading_a_column_nobody_wrote_names_the_step_and_column(tmp_path):
    folder = copy(tmp_path)
    edit(folder, "reads: [task_description, question, answer]", "reads: [task_description, question, anser]")
    with pytest.raises(PipelineError) as err:
        load_pipeline(str(folder))
    assert "step 'judge_pairs' (flow freeform_skill) reads column 'anser', which no earlier step writes" \
        in err.value.message
    assert "answer" in err.value.hint


def test_template_variable_the_step_does_not_read(tmp_path):
    folder = copy(tmp_path)
    (folder / "judge_questions.j2").write_text("{{ task_description }} {{ document_outline }} {{ items }}")
    with pytest.raises(PipelineError, match="template 'judge_questions.j2' uses 'document_outline'"):
        load_pipeline(str(folder))


def test_unknown_step_type_option_and_missing_template(tmp_path):
    folder = copy(tmp_path, "simple")
    edit(folder, "type: dedup", "type: dedupe")
    with pytest.raises(PipelineError, match="has type 'dedupe'"):
        load_pipeline(str(folder))
    folder = copy(tmp_path / "b", "simple")
    edit(folder, "method: rouge_l", "method: rouge_l, treshold: 0.5")
    with pytest.raises(PipelineError, match="unknown option"):
        load_pipeline(str(folder))
    folder = copy(tmp_path / "c", "simple")
    (folder / "skill_pairs.j2").unlink()
    with pytest.raises(PipelineError, match="template 'skill_pairs.j2' not found"):
        load_pipeline(str(folder))


@pytest.mark.parametrize("bad", ["0", "two", "1.5", "true"])
def test_choices_must_be_a_whole_number(tmp_path, bad):
    folder = copy(tmp_path, "simple")
    edit(folder, "choices: 4", f"choices: {bad}")
    with pytest.raises(PipelineError, match=r"step 'new_pairs' \(flow freeform_skill\): 'choices' must be a whole number"):
        load_pipeline(str(folder))


def test_a_flow_must_end_with_its_columns(tmp_path):
    folder = copy(tmp_path, "simple")
    edit(folder, "writes: [question, answer]\n        template: skill_pairs.j2",
         "writes: [question, reply]\n        template: skill_pairs.j2")
    edit(folder, "labels: {question: [Request, Question], answer: [Response, Answer]}",
         "labels: {question: [Request, Question], reply: [Response, Answer]}")
    edit(folder, "reads: [question, answer], min_words: 2, max_words: 400",
         "reads: [question, reply], min_words: 2, max_words: 400")
    with pytest.raises(PipelineError, match="flow 'freeform_skill' never writes 'answer'"):
        load_pipeline(str(folder))


def test_unknown_pipeline_name():
    with pytest.raises(PipelineError, match="no pipeline 'fast'"):
        load_pipeline("fast")
