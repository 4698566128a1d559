"""The taxonomy commands end to end, through the real console script and real git."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from unfork.taxonomy.examples import prepare_example_taxonomy

BAD = "version: 3\ntask_description: x\ncreated_by: me\nseed_examples:\n  - question: q\n    answer: a\n"


def unfork(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "unfork", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def example_taxonomy(tmp_path_factory) -> Path:
    return prepare_example_taxonomy(tmp_path_factory.mktemp("tax") / "taxonomy")


def add_leaf(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_validate_all_leaves_ok(example_taxonomy):
    proc = unfork("taxonomy", "validate", "--taxonomy-path", str(example_taxonomy))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 files checked: 3 valid" in proc.stdout


def test_validate_json_lines_and_exit_status(tmp_path):
    add_leaf(tmp_path, "compositional_skills/bad/qna.yaml", BAD)
    add_leaf(tmp_path, "compositional_skills/misnamed/qna.yml", BAD)
    proc = unfork("taxonomy", "validate", "--taxonomy-path", str(tmp_path), "--format", "json")
    assert proc.returncode == 1
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["path"] for r in rows] == ["compositional_skills/bad/qna.yaml", "compositional_skills/misnamed/qna.yml"]
    bad, misnamed = rows
    assert {"path", "kind", "version", "errors", "warnings"} <= set(bad)
    err = bad["errors"][0]
    assert err == {**err, "line": 5, "column": 3, "yaml_path": "seed_examples", "rule": "schema.min-items"}
    assert misnamed["errors"] == [] and misnamed["warnings"][0]["rule"] == "file.name"


def test_validate_github_annotations(tmp_path):
    leaf = add_leaf(tmp_path, "compositional_skills/bad/qna.yaml", BAD + "extra: 1   \n")
    proc = unfork("taxonomy", "validate", str(leaf), "--format", "github", cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert any(line.startswith("::error file=compositional_skills/bad/qna.yaml,line=7,col=9,title=lint.trailing-spaces")
               for line in lines), lines


def test_usage_errors_exit_2(tmp_path):
    assert unfork("taxonomy", "validate", str(tmp_path / "missing.yaml")).returncode == 2
    assert unfork("taxonomy", "validate", "--format", "xml").returncode == 2
    proc = unfork("taxonomy", "validate", "--taxonomy-path", str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_yaml_syntax_error_is_reported_not_raised(tmp_path):
    leaf = add_leaf(tmp_path, "knowledge/k/qna.yaml", "version: 3\ndomain: [unclosed\n")
    proc = unfork("taxonomy", "validate", str(leaf))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr + proc.stdout
    assert ":3:1: error YAML syntax error" in proc.stdout or ":2:" in proc.stdout


def test_diff_lists_new_leaves_and_validates_them(example_taxonomy):
    proc = unfork("taxonomy", "diff", "--taxonomy-path", str(example_taxonomy), "--taxonomy-base", "main")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 new or changed leaves against 'main'" in proc.stdout
    assert "knowledge/geography/islands/marrowvey/qna.yaml" in proc.stdout


def test_diff_reports_an_invalid_changed_leaf(tmp_path):
    root = prepare_example_taxonomy(tmp_path / "taxonomy")
    add_leaf(root, "compositional_skills/new/qna.yaml", BAD)
    proc = unfork("taxonomy", "diff", "--taxonomy-path", str(root), "--taxonomy-base", "main", "--format", "json")
    assert proc.returncode == 1
    rows = {json.loads(line)["path"]: json.loads(line) for line in proc.stdout.splitlines()}
    assert len(rows) == 4 and rows["compositional_skills/new/qna.yaml"]["errors"]


def test_diff_clear_errors(tmp_path):
    root = prepare_example_taxonomy(tmp_path / "taxonomy")
    proc = unfork("taxonomy", "diff", "--taxonomy-path", str(root), "--taxonomy-base", "no-such-ref")
    assert proc.returncode == 1 and "no-such-ref" in proc.stderr and "Traceback" not in proc.stderr
    plain = tmp_path / "plain"
    plain.mkdir()
    proc = unfork("taxonomy", "diff", "--taxonomy-path", str(plain))
    assert proc.returncode == 1 and "git" in proc.stderr and "Traceback" not in proc.stderr
    proc = unfork("taxonomy", "diff", "--taxonomy-path", str(plain), "--taxonomy-base", "empty")
    assert proc.returncode == 0, proc.stderr
