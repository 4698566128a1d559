"""The run report and its SVG charts: valid XML, the expected sections, user text escaped, gaps survived."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from unfork.eval import svg
from unfork.eval.report import loss_series, write_report

NS = "{http://www.w3.org/2000/svg}"
EVIL = "<script>alert('x')</script> & more"


def texts(svg_text: str) -> list[str]:
    return ["".join(t.itertext()) for t in ET.fromstring(svg_text).iter(f"{NS}text")]


def test_line_chart_is_valid_svg_with_axes_and_legend():
    out = svg.line_chart({"loss (knowledge)": [(1, 2.5), (2, 1.7), (3, 1.2)], "loss <skills>": [(4, 1.1), (5, 0.9)],
                          "empty": []}, title="Training & loss", x_label="step", y_label="loss")
    root = ET.fromstring(out)
    assert root.tag == f"{NS}svg"
    words = texts(out)
    assert "Training & loss" in words and "step" in words and "loss" in words
    assert "loss <skills>" in words and "empty" not in words
    assert "0" in words and "5" in words  # ticks
    assert len(root.findall(f"{NS}path")) >= 3  # the axes and one line per series


def test_line_chart_without_data():
    assert "no data" in texts(svg.line_chart({}, title="t", x_label="x", y_label="y"))


def test_bar_chart_shows_each_value_and_escapes_labels():
    out = svg.bar_chart(["knowledge/<fiction>", "skills/poems"], {"base": [25.0, None], "trained": [80.0, 60.5]},
                        title="knowledge: base vs trained", unit="%", maximum=100)
    root = ET.fromstring(out)
    words = texts(out)
    assert "knowledge/<fiction>" in words and "25%" in words and "80%" in words and "60.5%" in words
    assert "n/a" in words
    widths = [float(r.get("width")) for r in root.iter(f"{NS}rect") if r.find(f"{NS}title") is not None]
    assert widths[1] > widths[0] > 0  # 80 is drawn longer than 25


def test_stack_is_one_svg():
    one = svg.bar_chart(["a"], {"base": [1.0], "trained": [2.0]}, title="one")
    root = ET.fromstring(svg.stack([one, one]))
    assert len(root.findall(f"{NS}svg")) == 2


def test_nice_ticks():
    assert svg.nice_ticks(0, 10) == [0, 2, 4, 6, 8, 10]
    assert svg.nice_ticks(0.13, 2.7)[0] <= 0.13 and svg.nice_ticks(0.13, 2.7)[-1] >= 2.7
    assert svg.nice_ticks(5, 5)  # no division by zero


def write_train_dir(path):
    path.mkdir()
    rows = [{"phase": "knowledge", "epoch": 0, "global_step": s, "loss": 3.0 - s * 0.5} for s in (1, 2, 3)]
    rows.append({"phase": "knowledge", "epoch": 0, "global_step": 3, "eval_loss": 1.9})
    rows += [{"phase": "skills", "epoch": 0, "global_step": s, "loss": 1.5 - s * 0.2} for s in (1, 2)]
    rows.append({"phase": "skills", "epoch": 0, "global_step": 2, "eval_loss": None})
    text = "".join(json.dumps({"time": 1.0, **r}) + "\n" for r in rows)
    (path / "metrics.jsonl").write_text(text + '{"phase": "skills", "glob')  # a line cut by a crash
    return path


def write_dataset_dir(path):
    path.mkdir()
    manifest = {"teacher": "qwen2.5-coder-1.5b-instruct", "pipeline": {"name": "simple"},
                "leaves": [{"leaf": "knowledge/fiction/zorblax", "flow": "knowledge", "accepted": 40, "rejected": 7,
                            "train_samples": 80, "test_samples": 5, "rejected_by_reason": {"too short": 5, "dup": 2}},
                           {"leaf": "compositional_skills/haiku", "flow": "freeform_skill", "accepted": 20,
                            "rejected": 3, "train_samples": 20, "test_samples": 3, "rejected_by_reason": {}}],
                "files": {"train_knowledge.jsonl": 80, "train_skills.jsonl": 20, "test_all.jsonl": 8}}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def result(benchmark, metric, per_leaf, items):
    return {"benchmark": benchmark, "models": {"base": "smollm2-135m-instruct", "trained": "run/final"},
            "metric": metric, "overall": {"base": 25.0, "trained": 75.0, "delta": 50.0, "n": 8},
            "per_leaf": per_leaf, "items": items, "judge": None}


def fake_results():
    knowledge = result("knowledge", "accuracy",
                       [{"leaf": "knowledge/fiction/zorblax", "n": 8, "base": 25.0, "trained": 75.0, "delta": 50.0,
                         "verdict": "improved"}],
                       [{"leaf": "knowledge/fiction/zorblax", "question": "Who is the mayor?", "reference": "Quenna",
                         "base_answer": "Bob", "trained_answer": "Quenna", "base_score": 0, "trained_score": 1}])
    skills = result("skills", "score_1_10",
                    [{"leaf": "compositional_skills/haiku", "n": 3, "base": 4.0, "trained": 6.5, "delta": 2.5,
                      "verdict": "improved"}],
                    [{"leaf": "compositional_skills/haiku", "question": "Write a haiku", "reference": None,
                      "base_answer": EVIL, "trained_answer": "line one\nline two", "base_score": 3,
                      "trained_score": 7}])
    skills["judge"] = {"model": "qwen", "unparsed": 0.0}
    return [knowledge, skills]


def test_loss_series_lays_phases_end_to_end(tmp_path):
    series = loss_series(write_train_dir(tmp_path / "train") / "metrics.jsonl")
    assert series["loss (knowledge)"] == [(1, 2.5), (2, 2.0), (3, 1.5)]
    assert series["held-out loss (knowledge)"] == [(3, 1.9)]
    assert series["loss (skills)"] == [(4, 1.3), (5, 1.1)]  # shifted by the 3 steps of phase 1


def test_full_report(tmp_path):
    run = {"title": "unfork run 2025-01-01", "taxonomy": "examples/taxonomy", "teacher": "qwen2.5-coder-1.5b",
           "leaves": [{"path": "knowledge/fiction/zorblax", "kind": "knowledge"},
                      {"path": "compositional_skills/haiku", "kind": "freeform_skill", "seed_examples": 3}],
           "stage_seconds": {"validate": 0.4, "generate": 312.5, "train": 401.0, "evaluate": 95.2}}
    comparisons = [{"leaf": "compositional_skills/haiku", "question": "A haiku about <b>tea</b>?",
                    "reference": "steam rises", "base_answer": EVIL, "trained_answer": "warm cup | calm"}]
    train = write_train_dir(tmp_path / "train")
    md_path, html_path = write_report(tmp_path / "run", run=run, dataset_dir=write_dataset_dir(tmp_path / "data"),
                                      train_dir=train, results=fake_results(), comparisons=comparisons)
    md, html = md_path.read_text(), html_path.read_text()
    for heading in ("What was taught", "Training data", "Stage times", "Training loss", "Scores", "Example answers",
                    "Chat with the new model"):
        assert f"## {heading}" in md and f"<h2>{heading}" in html
    assert "| knowledge/fiction/zorblax | knowledge | 5 |" in md  # seed count from the manifest's test split
    assert "| compositional_skills/haiku | freeform_skill | 3 |" in md
    assert "| knowledge/fiction/zorblax | knowledge | 47 | 40 | 7 | 80 | 5 | too short (5), dup (2) |" in md
    assert "13 min 29 s" in md  # the total of the stage times
    assert "| knowledge | accuracy | 8 | 25% | 75% | +50 points |" in md
    assert "![Training loss against step](loss.svg)" in md and "(scores.svg)" in md
    assert f"unfork model chat --model {train / 'final'}" in md and f"unfork model chat --model {train / 'final'}" in html
    # User text never becomes markup.
    assert "<script>" not in md and "<script>" not in html and "&lt;script&gt;" in html and "&lt;script&gt;" in md
    assert "<b>tea</b>" not in html and "&lt;b&gt;tea" in md and "> warm cup | calm" in md
    # The HTML is one file: both charts inline, nothing loaded from elsewhere.
    assert html.count("<svg") >= 3 and "src=" not in html and "<link" not in html
    ET.fromstring((tmp_path / "run" / "loss.svg").read_text())
    ET.fromstring((tmp_path / "run" / "scores.svg").read_text())
    assert "Quenna" in html  # the knowledge example where the trained model got it right


def test_report_with_nothing_says_what_is_missing(tmp_path):
    md_path, html_path = write_report(tmp_path / "run", run={}, dataset_dir=None, train_dir=None, results=[],
                                      comparisons=None)
    md = md_path.read_text()
    assert "No dataset folder" in md and "no loss curve" in md and "No benchmark was run" in md
    assert "stage times were not recorded" in md and "no trained model" in md
    assert not (tmp_path / "run" / "loss.svg").exists()
    assert "<h2>Scores" in html_path.read_text()


def test_report_with_a_broken_run(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "manifest.json").write_text("{not json")
    (tmp_path / "train").mkdir()
    md_path, _ = write_report(tmp_path / "run", run={"leaves": []}, dataset_dir=tmp_path / "data",
                              train_dir=tmp_path / "train", results=[{"benchmark": "general"}], comparisons=[])
    md = md_path.read_text()
    assert "no readable manifest.json" in md and "missing or has no loss rows" in md
    assert "| general |" in md
