"""The shared result shape and table, finding the trained run and its base, the side-by-side answers."""

from __future__ import annotations

import io
import json
import os

import pytest
from rich.console import Console

from tests.eval.fake_judge import KNOWLEDGE, SKILLS, ScriptedModel, make_dataset, make_run
from unfork.errors import UserError
from unfork.eval.compare import (
    compare,
    dataset_for,
    newest_run,
    read_test_split,
    resolve_target,
    side_by_side_table,
)
from unfork.eval.results import judge_line, print_result, summarize, verdict, write_result
from unfork.paths import get_paths


def items(*scores):
    return [{"leaf": leaf, "question": "q", "reference": "r", "base_answer": "b", "trained_answer": "t",
             "base_score": b, "trained_score": t} for leaf, b, t in scores]


def test_summarize_means_per_leaf_and_overall():
    result = summarize("skills", ("base", "trained"), items(("a", 2, 8), ("a", 4, 6), ("b", 7, 3), ("c", None, 5)),
                       judge={"model": "j", "verdicts": 8, "unparseable": 1, "unparseable_share": 0.125})
    assert [(r["leaf"], r["n"], r["base"], r["trained"], r["delta"], r["verdict"]) for r in result["per_leaf"]] == [
        ("a", 2, 3.0, 7.0, 4.0, "improved"), ("b", 1, 7.0, 3.0, -4.0, "regressed"), ("c", 1, None, 5.0, None, "same")]
    assert result["overall"] == {"base": 4.33, "trained": 5.5, "delta": 1.17, "n": 4}
    assert set(result) == {"benchmark", "models", "metric", "overall", "per_leaf", "items", "judge"}


def test_accuracy_items_become_percent():
    result = summarize("knowledge", ("b", "t"), items(("a", 0, 1), ("a", 0, 1), ("a", 1, 1), ("a", 0, 0)),
                       metric="accuracy")
    assert result["overall"] == {"base": 25.0, "trained": 75.0, "delta": 50.0, "n": 4}
    assert result["judge"] is None


def test_verdict_ignores_noise():
    assert verdict(5.0, 5.01) == "same"
    assert verdict(5.0, 5.2) == "improved"
    assert verdict(50.0, 50.3, "accuracy") == "same"
    assert verdict(50.0, 40.0, "accuracy") == "regressed"


def test_write_and_print(tmp_path):
    result = summarize("dk", ("base [v1]", "trained"), items(("x/[y]", 2, 9), ("z", 8, 3)),
                       judge={"model": "j", "verdicts": 4, "unparseable": 1, "unparseable_share": 0.25})
    path = write_result(result, tmp_path / "eval")
    assert path == tmp_path / "eval" / "dk.json" and json.loads(path.read_text()) == result
    buf = io.StringIO()
    print_result(result, Console(file=buf, width=120, force_terminal=True, color_system="standard"))
    out = buf.getvalue()
    assert "x/[y]" in out and "base [v1]" in out  # brackets shown, not read as markup
    assert "\x1b[32m+7.00" in out and "\x1b[31m-5.00" in out  # improvement green, regression red
    assert judge_line(result) == "Judge j: 4 verdicts, 1 unparseable (25.0%)"


def test_no_trained_model_is_a_clear_error():
    with pytest.raises(UserError, match="no trained model yet") as err:
        resolve_target(None, None)
    assert "unfork model train" in str(err.value)


def test_newest_run_and_its_base(tmp_path):
    ckpt = get_paths().checkpoints_dir
    old = make_run(ckpt, "old", tmp_path, base="/m/old-base")
    new = make_run(ckpt, "new", tmp_path, base="/m/new-base")
    (ckpt / "unfinished").mkdir()
    (ckpt / "unfinished" / "training.json").write_text("{}")  # no final/: not a trained model
    os.utime(old / "training.json", (1, 1))
    assert newest_run() == new
    target = resolve_target(None, None)
    assert (target.model, target.base_model, target.run) == (str(new / "final"), "/m/new-base", new)
    target = resolve_target(str(old), "other-base")  # a run folder means its final/
    assert (target.model, target.base_model) == (str(old / "final"), "other-base")
    assert resolve_target(str(old / "final"), None).base_model == "/m/old-base"
    with pytest.raises(UserError, match="pass --base-model"):
        resolve_target(str(tmp_path / "some-model"), None)


def test_dataset_choice(tmp_path):
    recorded = make_dataset(tmp_path / "recorded")
    newest = make_dataset(get_paths().datasets_dir / "20990101")
    run = make_run(get_paths().checkpoints_dir, "r", recorded)
    assert dataset_for(run, None) == recorded
    assert dataset_for(None, None) == newest
    assert dataset_for(run, newest) == newest
    with pytest.raises(UserError, match="no such dataset folder"):
        dataset_for(None, tmp_path / "missing")


def test_no_dataset_is_a_clear_error():
    with pytest.raises(UserError, match="no generated dataset"):
        dataset_for(None, None)


def test_test_items_and_bad_lines(tmp_path):
    ds = make_dataset(tmp_path / "ds")
    got = read_test_split(ds)
    assert [(i.leaf, i.kind, i.question, i.reference) for i in got] == (
        [(leaf, "skills", q, a) for leaf, q, a in SKILLS] + [(leaf, "knowledge", q, a) for leaf, q, a in KNOWLEDGE])
    assert [m["role"] for m in got[0].conversation] == ["system", "user"]
    (ds / "test_skills.jsonl").write_text('{"messages": []}\n')
    with pytest.raises(UserError, match=r"test_skills.jsonl, line 1: not a chat sample"):
        read_test_split(ds)


def test_side_by_side(tmp_path):
    ds = make_dataset(tmp_path / "ds")
    base = ScriptedModel("b", default="[bold]no idea[/bold]")
    trained = ScriptedModel("t", {SKILLS[0][1]: "Rain on the roof, softly"})
    result = compare(trained, base, read_test_split(ds), echo=lambda _: None)
    assert result["models"] == {"base": "b", "trained": "t"}
    assert result["items"][0] == {"leaf": SKILLS[0][0], "kind": "skills", "question": SKILLS[0][1],
                                  "reference": SKILLS[0][2], "base_answer": "[bold]no idea[/bold]",
                                  "trained_answer": "Rain on the roof, softly"}
    buf = io.StringIO()
    Console(file=buf, width=160).print(side_by_side_table(result))
    assert "[bold]no idea[/bold]" in buf.getvalue()
