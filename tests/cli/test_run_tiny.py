"""``unfork run`` end to end with nothing downloaded: a 2-layer student and the scripted teacher.

The real-model test (test_run.py) is skipped where the student is missing;
this one runs everywhere, so every stage of the main job, and the files each
leaves in the run folder, are checked on every machine.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tests.cli.test_run import teacher
from tests.client.fake_openai import FakeOpenAI
from tests.train.conftest import byte_tokenizer, tiny_model

STAGES = {"validate", "generate", "train", "evaluate", "report"}


@pytest.fixture
def tiny_student(tmp_path):
    """A 2-layer Llama with a byte tokenizer and a chat template, as a Hugging Face folder."""
    folder = tmp_path / "tiny-student"
    tok = byte_tokenizer()
    tiny_model(len(tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def run_args(out):
    return ["run", "--output-dir", str(out), "--num-samples", "2", "--knowledge-samples", "2",
            "--epochs", "1", "--knowledge-epochs", "1"]


def test_the_main_job_runs_every_stage_with_a_tiny_student(tmp_path, monkeypatch, tiny_student):
    from unfork.cli.main import cli

    out = tmp_path / "run"
    monkeypatch.setenv("UNFORK_MODELS_STUDENT", str(tiny_student))
    monkeypatch.setenv("UNFORK_TRAIN_DEVICE", "cpu")
    with FakeOpenAI(on_chat=teacher, http11=True, model="scripted-teacher") as fake:
        monkeypatch.setenv("UNFORK_GENERATE_ENDPOINT_URLS", fake.url)
        res = CliRunner().invoke(cli, run_args(out), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    asked = [body["messages"][-1]["content"] for _, path, body in fake.requests if path == "/v1/chat/completions"]
    assert any("[PASSAGE]" in p for p in asked) and any("[ANSWER]" in p for p in asked)  # exam and judge

    run = json.loads((out / "run.json").read_text())
    assert set(run["stage_seconds"]) == STAGES
    assert {leaf["kind"] for leaf in run["leaves"]} == {"knowledge", "skill"}
    assert all(leaf["valid"] for leaf in run["leaves"])
    assert run["settings"]["student"] == str(tiny_student) and run["settings"]["epochs"] == 1
    assert set(run["scores"]) == {"knowledge", "skills", "general"}
    assert set(run["eval_seconds"]) == {"knowledge", "skills", "general", "answers side by side"}

    dataset = out / "dataset"
    assert run["dataset"]["path"] == str(dataset)
    for name in ("manifest.json", "train_all.jsonl", "train_knowledge.jsonl", "train_skills.jsonl",
                 "test_skills.jsonl", "test_knowledge.jsonl", "eval_knowledge.json"):
        assert (dataset / name).is_file(), name
    assert all(entry["accepted"] >= 1 for entry in run["dataset"]["leaves"].values())
    formats = {json.loads(line)["metadata"]["format"]
               for line in (dataset / "train_knowledge.jsonl").read_text().splitlines()}
    assert formats == {"qa", "passage"}  # the main job's mix: no RAFT copies

    final = out / "train" / "final"
    assert (final / "config.json").is_file() and (final / "tokenizer_config.json").is_file()
    assert run["training"]["base_model"] == str(tiny_student)
    for name in ("knowledge.json", "skills.json", "general.json"):
        result = json.loads((out / "eval" / name).read_text())
        assert result["overall"]["n"] >= 1 and 0 <= result["overall"]["trained"] <= 100, name
    html = (out / "report.html").read_text()
    assert "<svg" in html and "marrowvey" in html.lower()
    assert f"unfork model chat --model {final}" in res.output

    # The same command again resumes: every stage finds its work done, and the teacher is not asked again.
    with FakeOpenAI(on_chat=teacher, http11=True, model="scripted-teacher") as fake:
        monkeypatch.setenv("UNFORK_GENERATE_ENDPOINT_URLS", fake.url)
        again = CliRunner().invoke(cli, [*run_args(out), "--skip-eval"], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert "already trained" in again.output
    assert not [path for _, path, _ in fake.requests if path == "/v1/chat/completions"]
