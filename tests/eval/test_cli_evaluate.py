"""``unfork model test`` and ``unfork model evaluate`` through the CLI, with scripted models and judge."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from tests.eval.fake_judge import SKILLS, fake_judge, good_and_bad_models, make_dataset, make_run
from unfork.cli.main import cli
from unfork.errors import UserError
from unfork.paths import get_paths


@pytest.fixture
def trained_run(tmp_path, monkeypatch):
    """A trained run on a dataset, whose models are scripted (no weights are loaded)."""
    import contextlib

    from unfork.eval import compare

    dataset = make_dataset(get_paths().datasets_dir / "20250101-000000")
    run = make_run(get_paths().checkpoints_dir, "smol-lora-1234", dataset, base="/models/base-hf")
    base, trained = good_and_bad_models()
    opened = []

    @contextlib.contextmanager
    def scripted(model, label):
        opened.append(str(model))
        yield trained if label == "trained" else base

    monkeypatch.setattr(compare, "responder_for", scripted)
    return run, opened


def invoke(*args):
    return CliRunner(env={"COLUMNS": "200"}).invoke(cli, ["model", *args], catch_exceptions=True)


def test_help_explains_the_benchmarks_without_importing_torch():
    code = ("import sys\nfrom click.testing import CliRunner\nfrom unfork.cli.main import cli\n"
            "r = CliRunner().invoke(cli, ['model', 'evaluate', '--help'])\nprint(r.output)\n"
            "r = CliRunner().invoke(cli, ['model', 'test', '--help'])\nprint(r.output)\n"
            "print('HEAVY', [m for m in ('torch', 'transformers') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for text in ("knowledge", "skills", "general", "dk", "--judge-endpoint-url", "--judge-model", "--api-key",
                 "--questions-file", "--tasks-path", "--output-dir", "--json", "Did it forget", "--limit",
                 "--max-tokens", "side by side"):
        assert text in out, text
    assert "HEAVY []" in out


@pytest.mark.parametrize("args", [["test"], ["evaluate", "--benchmark", "skills"]])
def test_no_trained_model_yet(args):
    result = invoke(*args)
    assert result.exit_code != 0
    assert isinstance(result.exception, UserError)
    assert "no trained model yet" in str(result.exception) and "unfork model train" in str(result.exception)


def test_model_test_side_by_side_and_json(trained_run, tmp_path):
    run, opened = trained_run
    out = tmp_path / "answers.json"
    result = invoke("test", "--output", str(out), "--limit", "2")
    assert result.exit_code == 0, result.output
    assert opened == ["/models/base-hf", str(run / "final")]
    assert SKILLS[0][1] in result.output and "Here it is: Rain on the roof." in result.output
    saved = json.loads(out.read_text())
    assert len(saved["items"]) == 2 and saved["items"][0]["trained_answer"] == "Here it is: Rain on the roof."
    assert saved["models"] == {"base": "base-hf", "trained": "smol-lora-1234"}


def test_evaluate_skills_writes_into_the_run(trained_run):
    run, _ = trained_run
    with fake_judge() as judge:
        result = invoke("evaluate", "-b", "skills", "--judge-endpoint-url", judge.url)
    assert result.exit_code == 0, result.output
    saved = json.loads((run / "eval" / "skills.json").read_text())
    assert saved["overall"]["n"] == 3 and saved["judge"]["verdicts"] == 6
    assert "compositional_skills/writing/haiku" in result.output
    assert "improved" in result.output and "regressed" in result.output
    assert "0 unparseable (0.0%)" in result.output


def test_evaluate_dk_as_json(trained_run, tmp_path):
    questions = tmp_path / "mine.jsonl"
    questions.write_text('{"question": "Write a haiku about rain.", "answer": "Rain on the roof"}\n')
    with fake_judge() as judge:
        result = CliRunner().invoke(cli, ["model", "evaluate", "-b", "dk", "--questions-file", str(questions),
                                          "--judge-endpoint-url", judge.url, "--output-dir", str(tmp_path / "o"),
                                          "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["benchmark"] == "dk" and printed["items"][0]["trained_score"] == 9
    assert json.loads((tmp_path / "o" / "dk.json").read_text()) == printed


def test_dk_needs_a_valid_file(trained_run, tmp_path):
    run, opened = trained_run
    result = invoke("evaluate", "-b", "dk")
    assert result.exit_code == 2 and "--questions-file" in result.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "Q?", "answer": "A"}\n{"question": "Q2?"}\n')
    result = invoke("evaluate", "-b", "dk", "--questions-file", str(bad))
    assert isinstance(result.exception, UserError)
    assert "bad.jsonl, line 2: missing field 'reference_answer'" in str(result.exception)
    assert opened == []  # the file is checked before any model is loaded


def test_knowledge_and_general_are_called_with_keywords(trained_run, tmp_path, monkeypatch):
    import types

    from unfork.eval.results import summarize

    run, _ = trained_run
    calls = {}

    def fake(name):
        def bench(model, base_model, **kwargs):
            calls[name] = (model, base_model, kwargs)
            kwargs["echo"]("working")
            return summarize(name, ("b", "t"), [{"leaf": "x", "base_score": 0, "trained_score": 1}], metric="accuracy")
        return bench

    monkeypatch.setitem(sys.modules, "unfork.eval.knowledge", types.SimpleNamespace(run_knowledge=fake("knowledge")))
    monkeypatch.setitem(sys.modules, "unfork.eval.general", types.SimpleNamespace(run_general=fake("general")))
    result = invoke("evaluate", "-b", "knowledge", "--judge-endpoint-url", "http://j:1/v1", "--json")
    assert result.exit_code == 0, result.output
    model, base, kwargs = calls["knowledge"]
    assert (model, base) == (str(run / "final"), "/models/base-hf")
    assert {k: v for k, v in kwargs.items() if k != "echo"} == {
        "data_path": None, "output_dir": run / "eval", "judge_url": "http://j:1/v1", "judge_model": None,
        "api_key": None}
    assert json.loads(result.stdout)["overall"]["trained"] == 100.0  # progress went to stderr
    result = invoke("evaluate", "-b", "general", "--tasks-path", str(tmp_path), "--limit", "3")
    assert result.exit_code == 0, result.output
    assert calls["general"][2]["tasks_path"] == tmp_path and calls["general"][2]["limit"] == 3
    assert (run / "eval" / "general.json").is_file() and "100.0%" in result.output
