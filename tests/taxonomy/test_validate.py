from __future__ import annotations

import copy
import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.taxonomy.qna_samples import dump, knowledge, skill
from unfork.taxonomy import reader
from unfork.taxonomy.validate import validate_file, validate_files

REPO = Path(__file__).resolve().parents[2]


def leaf(tmp_path: Path, text: str | bytes, where: str = "compositional_skills/demo/qna.yaml") -> Path:
    path = tmp_path / where
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def check(tmp_path, text, where="compositional_skills/demo/qna.yaml"):
    return validate_file(leaf(tmp_path, text, where), tmp_path)


def rules(report) -> list[tuple[str, int, int, str]]:
    return [(m.rule, m.line, m.column, m.yaml_path) for m in report.errors]


def test_example_taxonomy_is_valid():
    paths = sorted((REPO / "examples" / "taxonomy").rglob("qna.yaml"))
    assert len(paths) == 3
    reports = validate_files(paths, REPO / "examples" / "taxonomy")
    assert [r.errors for r in reports] == [[], [], []]
    assert sorted(r.kind for r in reports) == ["knowledge", "skill", "skill"]


SKILL = """\
version: 3
task_description: Write short poems.
created_by: ada
seed_examples:
  - question: Q1?
    answer: A1.
  - question: Q2?
    answer: A2.
  - question: Q3?
    answer: A3.
  - question: Q4?
    answer: A4.
  - question: Q5?
    answer: A5.
"""


def test_valid_skill(tmp_path):
    report = check(tmp_path, SKILL)
    assert report.ok and report.kind == "skill" and report.version == 3 and not report.warnings


@pytest.mark.parametrize("edit,expected", [
    (lambda s: s.replace("created_by: ada\n", ""), ("schema.required", 1, 1, ".")),
    (lambda s: s.replace("task_description", "task_descripton"), ("schema.unknown-key", 2, 1, "task_descripton")),
    (lambda s: s.replace("    answer: A3.", "    answer: 42"), ("schema.type", 10, 13, "seed_examples[2].answer")),
    (lambda s: s.replace("    answer: A4.", '    answer: ""'), ("schema.empty", 12, 13, "seed_examples[3].answer")),
    (lambda s: s.replace("  - question: Q5?\n    answer: A5.\n", ""), ("schema.min-items", 5, 3, "seed_examples")),
    (lambda s: s.replace("Q2?\n    answer: A2.", "Q1?\n    answer: A1."), ("schema.unique", 7, 5, "seed_examples[1]")),
    (lambda s: s.replace("version: 3", "version: 4"), ("schema.version", 1, 10, "version")),
    (lambda s: s.replace("version: 3", "version: '3'"), ("schema.type", 1, 10, "version")),
    (lambda s: s.replace("    answer: A1.", "    answer: A1.\n    hint: x"), ("schema.unknown-key", 7, 5, "seed_examples[0].hint")),
])
def test_schema_errors_point_at_the_node(tmp_path, edit, expected):
    report = check(tmp_path, edit(SKILL))
    assert expected in rules(report), [str(m) for m in report.errors]
    assert all(m.hint for m in report.errors)


def test_unknown_key_suggests_the_closest(tmp_path):
    report = check(tmp_path, SKILL.replace("seed_examples", "seed_example"))
    unknown = [m for m in report.errors if m.rule == "schema.unknown-key"]
    assert unknown and "seed_examples" in unknown[0].hint


def test_version_1_needs_one_example_and_is_not_linted(tmp_path):
    text = "task_description: t\ncreated_by: a\nseed_examples:\n- question: q   \n  answer: a\n"
    report = check(tmp_path, text)
    assert report.ok and report.version == 1  # trailing spaces are not linted in version 1


def test_version_1_duplicate_key_is_a_warning(tmp_path):
    text = "task_description: t\ncreated_by: a\ncreated_by: b\nseed_examples:\n- question: q\n  answer: a\n"
    report = check(tmp_path, text)
    assert report.ok and [m.rule for m in report.warnings] == ["yaml.duplicate-key"]


@pytest.mark.parametrize("version", [1, 2])
def test_knowledge_before_version_3_is_rejected(tmp_path, version):
    doc = knowledge(random.Random(1))
    doc["version"] = version
    report = check(tmp_path, dump(doc), "knowledge/x/qna.yaml")
    assert [m.rule for m in report.errors] == ["schema.version"]
    assert "minimum is 3" in report.errors[0].message


def test_knowledge_rules(tmp_path):
    doc = knowledge(random.Random(2))
    assert check(tmp_path, dump(doc), "knowledge/x/qna.yaml").ok
    bad = copy.deepcopy(doc)
    bad["seed_examples"][1]["questions_and_answers"].pop()
    del bad["document"]["patterns"]
    report = check(tmp_path, dump(bad), "knowledge/x/qna.yaml")
    paths = {(m.rule, m.yaml_path) for m in report.errors}
    assert ("schema.min-items", "seed_examples[1].questions_and_answers") in paths
    assert ("schema.required", "document") in paths


def test_kind_from_nearest_folder_then_document_key(tmp_path):
    doc = knowledge(random.Random(3))
    # under compositional_skills the knowledge-shaped file is checked as a skill, as InstructLab does
    report = check(tmp_path, dump(doc), "knowledge/a/compositional_skills/b/qna.yaml")
    assert report.kind == "skill" and not report.ok
    assert check(tmp_path, dump(doc), "foundational_skills/k/qna.yaml").kind == "knowledge"
    found = check(tmp_path, dump(skill(random.Random(3))), "foundational_skills/s/qna.yaml")
    assert found.kind == "skill" and found.foundational and found.ok


def test_size_advice_is_a_warning(tmp_path):
    doc = skill(random.Random(4), grounded=True)
    doc["seed_examples"][2]["context"] = "word " * 501
    doc["seed_examples"][3]["answer"] = "word " * 251
    report = check(tmp_path, dump(doc))
    assert report.ok
    assert {m.rule for m in report.warnings} == {"size.context-words", "size.answer-words"}
    for i in (0, 1, 4):
        doc["seed_examples"][i]["context"] = "word " * 480  # under the per-context limit, over in total
    report = check(tmp_path, dump(doc))
    assert {m.rule for m in report.warnings} == {"size.context-words", "size.answer-words", "size.file-words"}


def test_misnamed_leaf_is_warned_and_skipped(tmp_path):
    report = check(tmp_path, SKILL, "compositional_skills/demo/qna.yml")
    assert report.skipped and report.ok and report.warnings[0].rule == "file.name"


def test_empty_file_warns_like_instructlab(tmp_path):
    report = check(tmp_path, "")
    assert report.ok and report.warnings[0].rule == "file.empty"


@pytest.mark.parametrize("content,rule,line", [
    (b"version: 3\n\x00\x01binary", "read.binary", 2),
    (b"version: 3\ntask_description: caf\xe9\n", "read.encoding", 2),
    (b"- a\n- b\n", "schema.type", 1),
    (b"'just a string'\n", "schema.type", 1),
    (b"version: 3\n\ttask_description: x\n", "yaml.syntax", 2),
    (b"version: 3\ntask_description: a: b\n", "yaml.syntax", 2),
    (b"version: 3\ncreated_by: ada\tlovelace\n", "yaml.syntax", 2),  # libyaml accepts it; InstructLab does not
    (b"version: 3\nx: &a [*a]\n", "yaml.recursive-alias", 1),
    (b"version: 3\nx: *nope\n", "yaml.syntax", 2),
    (b"[" * 5000, "yaml.syntax", 1),
])
def test_bad_input_is_a_message_not_a_crash(tmp_path, content, rule, line):
    report = check(tmp_path, content)
    assert (rule, line) in [(m.rule, m.line) for m in report.errors], report.errors


def test_alias_bomb_is_refused_quickly(tmp_path):
    lines = ["version: 3", "a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev, cur = chr(96 + i), chr(97 + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 10) + "]")
    report = check(tmp_path, "\n".join(lines) + "\n")
    assert "yaml.alias-bomb" in [m.rule for m in report.errors]


def test_duplicate_key_is_a_lint_error_from_version_2(tmp_path):
    report = check(tmp_path, SKILL.replace("created_by: ada\n", "created_by: ada\ncreated_by: bob\n"))
    assert any(m.rule == "lint.key-duplicates" and m.line == 4 for m in report.errors)


def test_too_large_file(tmp_path):
    report = check(tmp_path, SKILL + "# " + "x" * reader.MAX_BYTES + "\n")
    assert [m.rule for m in report.errors] == ["read.too-large"]


def test_symlink_outside_the_taxonomy(tmp_path):
    outside = tmp_path / "outside.yaml"
    outside.write_text(SKILL)
    root = tmp_path / "tax"
    link = root / "compositional_skills" / "x" / "qna.yaml"
    link.parent.mkdir(parents=True)
    os.symlink(outside, link)
    assert [m.rule for m in validate_file(link, root).errors] == ["read.symlink"]
    inside = root / "compositional_skills" / "real.yaml"
    inside.write_text(SKILL)
    link.unlink()
    os.symlink(inside, link)
    assert validate_file(link, root).ok


def test_missing_file(tmp_path):
    assert [m.rule for m in validate_file(tmp_path / "nope" / "qna.yaml").errors] == ["read.missing"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=400))
def test_arbitrary_text_never_crashes(tmp_path, text):
    report = check(tmp_path, text)
    for m in report.errors + report.warnings:
        assert m.line >= 1 and m.column >= 1 and m.message


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(st.sampled_from(["version", "created_by", "task_description", "seed_examples", "question",
                                       "answer", "context", "document", "patterns", "x"]) | st.text(max_size=8),
                      children, max_size=6),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(yaml_values)
def test_arbitrary_yaml_never_crashes(tmp_path, value):
    report = check(tmp_path, dump(value))
    assert all(m.line >= 1 for m in report.errors)


@pytest.mark.parametrize("n", [1, 7])
def test_parallel_and_serial_agree(tmp_path, n):
    rng = random.Random(n)
    paths = []
    for i in range(40):
        doc = skill(rng, n=rng.choice([3, 5, 6])) if i % 2 else knowledge(rng, qa=rng.choice([2, 3]))
        where = f"{'compositional_skills' if i % 2 else 'knowledge'}/l{i}/qna.yaml"
        paths.append(leaf(tmp_path, dump(doc), where))
    serial = validate_files(paths, tmp_path, jobs=1)
    import unfork.taxonomy.validate as v
    old, v.PARALLEL_THRESHOLD = v.PARALLEL_THRESHOLD, 1
    try:
        parallel = validate_files(paths, tmp_path, jobs=2)
    finally:
        v.PARALLEL_THRESHOLD = old
    assert [r.to_json() for r in serial] == [r.to_json() for r in parallel]
    assert any(not r.ok for r in serial) and any(r.ok for r in serial)
