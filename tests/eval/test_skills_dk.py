"""The skills and dk benchmarks with a scripted judge and scripted models; one run with the real things."""

from __future__ import annotations

import json

import pytest

from tests.eval.fake_judge import (
    SKILLS,
    ScriptedModel,
    fake_judge,
    good_and_bad_models,
    make_dataset,
    make_run,
)
from unfork.errors import UserError
from unfork.eval.dk import read_questions, run_dk
from unfork.eval.judge import open_judge
from unfork.eval.skills import run_skills
from unfork.paths import get_paths


def test_skills_per_leaf_improvements_and_regressions(tmp_path):
    dataset = make_dataset(tmp_path / "ds")
    base, trained = good_and_bad_models()
    with fake_judge() as server, open_judge(server.url) as judge:
        result = run_skills(trained, base, data_path=dataset, judge=judge, output_dir=tmp_path / "out",
                            echo=lambda _: None)
    assert result["benchmark"] == "skills" and result["metric"] == "score_1_10"
    assert result["models"] == {"base": "base-model", "trained": "trained-model"}
    leaves = {row["leaf"]: row for row in result["per_leaf"]}
    # haiku: base 2, 2 -> trained 9, 9; dates: base 9 (it knew), trained MUMBLE (2 after the reminder).
    assert leaves["compositional_skills/writing/haiku"] == {
        "leaf": "compositional_skills/writing/haiku", "n": 2, "base": 2.0, "trained": 9.0, "delta": 7.0,
        "verdict": "improved"}
    assert leaves["compositional_skills/extraction/dates"]["verdict"] == "regressed"
    assert result["overall"] == {"base": pytest.approx(13 / 3, abs=0.01), "trained": pytest.approx(20 / 3, abs=0.01),
                                 "delta": pytest.approx(7 / 3, abs=0.01), "n": 3}
    assert result["judge"]["verdicts"] == 6 and result["judge"]["unparseable"] == 0
    assert result["judge"]["retries"] == 1
    item = result["items"][0]
    assert item["question"] == SKILLS[0][1] and item["reference"] == SKILLS[0][2]
    assert item["base_score"] == 2 and item["trained_score"] == 9 and "Rating" in item["trained_judge_raw"]
    # The models saw the dataset's system prompt, and only skill questions (no knowledge).
    assert trained.calls[0][0][0] == {"role": "system", "content": "You are a helpful, accurate assistant."}
    assert len(trained.calls[0]) == 3
    saved = json.loads((tmp_path / "out" / "skills.json").read_text())
    assert saved["overall"] == result["overall"]


def test_skills_uses_the_dataset_the_run_was_trained_on(tmp_path):
    used = make_dataset(tmp_path / "used")
    newer = get_paths().datasets_dir / "20990101-000000"
    make_dataset(newer)
    (newer / "test_skills.jsonl").write_text("")  # the newest one has no skills: picking it would fail
    run = make_run(get_paths().checkpoints_dir, "run-a", used)
    base, trained = good_and_bad_models()
    from unfork.eval import compare

    opened = []
    real = compare.responder_for

    def fake_responder_for(model, label):
        opened.append(str(model))
        return real(trained if label == "trained" else base, label)

    import unittest.mock

    with unittest.mock.patch.object(compare, "responder_for", fake_responder_for), fake_judge() as server:
        result = run_skills(str(run / "final"), "/models/base-hf", judge_url=server.url, echo=lambda _: None)
    assert result["dataset"] == str(used)
    assert opened == ["/models/base-hf", str(run / "final")]
    assert result["models"]["trained"] == "run-a"


def test_skills_without_skill_questions_is_a_clear_error(tmp_path):
    dataset = make_dataset(tmp_path / "ds")
    (dataset / "test_skills.jsonl").unlink()
    with pytest.raises(UserError, match="no skill test questions"):
        run_skills(ScriptedModel("t"), ScriptedModel("b"), data_path=dataset, judge=object(), echo=lambda _: None)


# --------------------------------------------------------------------------- dk


def write(path, *lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_dk_reads_all_accepted_keys(tmp_path):
    f = write(tmp_path / "dk.jsonl",
              '{"question": "Q1?", "reference_answer": "A1"}', "",
              '{"question": "Q2?", "answer": "A2", "category": "history"}',
              '{"question": "Q3?", "reference": " A3 "}')
    qs = read_questions(f)
    assert [(q.question, q.reference, q.category, q.line) for q in qs] == [
        ("Q1?", "A1", "dk", 1), ("Q2?", "A2", "history", 3), ("Q3?", "A3", "dk", 4)]


@pytest.mark.parametrize("lines, message", [
    (['{"question": "Q?", "reference_answer": "A"}', '{"question": "Q2?" "answer": "A"}'], r"dk.jsonl, line 2: not valid JSON"),
    (['{"reference_answer": "A"}'], r"dk.jsonl, line 1: missing field 'question'"),
    (['{"question": "Q?"}'], r"dk.jsonl, line 1: missing field 'reference_answer' \(or 'answer', 'reference'\)"),
    (['{"question": "", "answer": "A"}'], r"dk.jsonl, line 1: field 'question' must be a non-empty string"),
    (['{"question": "Q?", "answer": 42}'], r"dk.jsonl, line 1: field 'answer' must be a non-empty string"),
    (['["Q?", "A"]'], r"dk.jsonl, line 1: expected a JSON object, got list"),
    ([""], r"dk.jsonl holds no questions"),
])
def test_dk_file_errors_name_file_line_and_field(tmp_path, lines, message):
    f = write(tmp_path / "dk.jsonl", *lines)
    with pytest.raises(UserError, match=message):
        read_questions(f)


def test_dk_missing_or_binary_file(tmp_path):
    with pytest.raises(UserError, match="no such questions file"):
        read_questions(tmp_path / "nope.jsonl")
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00junk")
    with pytest.raises(UserError, match="not UTF-8"):
        read_questions(tmp_path / "bin.jsonl")


def test_dk_scores_base_and_trained_against_the_references(tmp_path):
    f = write(tmp_path / "dk.jsonl", '{"question": "Where is Marrowvey?", "reference_answer": "in the North Sea"}',
              '{"question": "Who founded it?", "answer": "Ada Venn", "category": "history"}')
    base = ScriptedModel("base", {"Who founded it?": "SILENT"})
    trained = ScriptedModel("trained", {"Where is Marrowvey?": "It lies in the North Sea.",
                                        "Who founded it?": "partly Ada"})
    with fake_judge() as server:
        result = run_dk(trained, base, questions_file=f, judge_url=server.url, output_dir=tmp_path / "out",
                        echo=lambda _: None)
    assert [(i["base_score"], i["trained_score"]) for i in result["items"]] == [(2, 9), (None, 5)]
    assert result["judge"]["unparseable"] == 1 and result["judge"]["unparseable_share"] == 0.25
    leaves = {row["leaf"]: row for row in result["per_leaf"]}
    assert leaves["dk"]["verdict"] == "improved"
    assert leaves["history"]["base"] is None and leaves["history"]["verdict"] == "same"
    assert result["overall"]["n"] == 2
    assert base.calls[0][0][0]["role"] == "system"
    assert (tmp_path / "out" / "dk.json").is_file()


# --------------------------------------------------------------------------- the real things


@pytest.mark.slow
@pytest.mark.llama
def test_real_student_and_real_llama_cpp_judge(tmp_path):
    from tests.conftest import REAL_MODELS_DIR, missing, real_llama_server, real_model_file

    student = REAL_MODELS_DIR / "smollm2-135m-instruct-hf"
    if not (student / "config.json").is_file():
        missing("the SmolLM2 Hugging Face folder is missing: run 'unfork model convert smollm2-135m-instruct --to hf'")
    real_llama_server()
    judge_file = real_model_file("qwen2.5-coder-0.5b-instruct")
    dataset = make_dataset(tmp_path / "ds")
    (dataset / "test_skills.jsonl").write_text("".join(
        (tmp_path / "ds" / "test_skills.jsonl").read_text().splitlines(keepends=True)[:2]))
    # No endpoint: the judge's llama.cpp server starts after the answers and stops at the end, as in the CLI.
    result = run_skills(str(student), str(student), data_path=dataset, judge_model=str(judge_file),
                        output_dir=tmp_path / "out", max_tokens=48, echo=lambda _: None)
    assert len(result["items"]) == 2
    for item in result["items"]:
        assert item["base_answer"] and item["base_answer"] == item["trained_answer"]  # same model, greedy
        for side in ("base", "trained"):
            assert item[f"{side}_score"] is None or 1 <= item[f"{side}_score"] <= 10, item[f"{side}_judge_raw"]
    j = result["judge"]
    assert j["verdicts"] == 4 and 0 <= j["unparseable"] <= 4
    assert json.loads((tmp_path / "out" / "skills.json").read_text())["judge"]["verdicts"] == 4
