from __future__ import annotations

import json
from pathlib import Path

import pytest

from unfork.errors import UserError
from unfork.taxonomy.leaf import DocumentRef, check_leaf, check_leaves, load_leaf

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "taxonomy"

GROUNDED = "version: 3\ncreated_by: tests\ntask_description: 'Pull the date out of a note. '\nseed_examples:\n" + "".join(
    f"  - context: ' Note {i}: we meet on day {i}. '\n    question: When do we meet?\n    answer: On day {i}.\n"
    for i in range(1, 6))


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_load_example_leaves():
    leaves = {leaf.kind + ("-grounded" if leaf.grounded else ""): leaf
              for leaf in (load_leaf(p, EXAMPLES) for p in sorted(EXAMPLES.rglob("qna.yaml")))}
    assert set(leaves) == {"skill", "skill-grounded", "knowledge"}
    know = leaves["knowledge"]
    assert isinstance(know.document, DocumentRef) and know.document.patterns and len(know.document.commit) == 40
    assert len(know.knowledge_seeds) == 5 and all(len(s.qas) == 3 for s in know.knowledge_seeds)
    assert len(know.all_qas()) == 15 and all(qa.context for qa in know.all_qas())
    assert know.flow == "knowledge" and know.is_knowledge and know.rel == "knowledge/geography/islands/marrowvey"
    assert know.slug == "knowledge.geography.islands.marrowvey"
    assert list(know.columns) == ["leaf", "seed_examples", "domain", "document_outline"]
    assert know.columns["seed_examples"][0] == {"context": know.knowledge_seeds[0].context,
                                                "question": know.knowledge_seeds[0].qas[0].question,
                                                "answer": know.knowledge_seeds[0].qas[0].answer}
    skill = leaves["skill"]
    assert skill.task_description and len(skill.seeds) >= 5 and not skill.grounded
    assert skill.flow == "freeform_skill" and skill.document is None
    assert skill.name == str(Path(skill.rel_path).parent) and len(skill.content_hash) == 64
    assert leaves["skill-grounded"].flow == "grounded_skill"


def test_columns_and_cache_key_are_those_the_generator_has_always_used(tmp_path):
    """Pinned values: a change here would invalidate every cached generation and its journal."""
    path = write(tmp_path, "compositional_skills/grounded/dates/qna.yaml", GROUNDED)
    leaf = load_leaf(path, tmp_path)
    assert leaf.flow == "grounded_skill"
    assert leaf.cache_key("pipe", {"seed": 7, "teacher": "t"}) == "a9cdb1dcd267e2278467"
    assert json.dumps(leaf.columns) == json.dumps({
        "leaf": "compositional_skills/grounded/dates",
        "seed_examples": [{"question": "When do we meet?", "answer": f"On day {i}.",
                           "context": f"Note {i}: we meet on day {i}."} for i in range(1, 6)],
        "task_description": "Pull the date out of a note. ",  # as written: the prompts quote it
    })
    assert [qa.line for qa in leaf.seeds] == [5, 8, 11, 14, 17]
    leaf.columns["leaf"] = "changed"
    assert leaf.columns["leaf"] == "compositional_skills/grounded/dates"  # a copy each time: the leaf stays frozen


def test_check_leaves_reports_every_file_and_reads_only_the_valid_ones(tmp_path):
    good = write(tmp_path, "compositional_skills/grounded/dates/qna.yaml", GROUNDED)
    bad = write(tmp_path, "compositional_skills/bad/qna.yaml", "version: 3\ncreated_by: a\n")
    misnamed = write(tmp_path, "compositional_skills/other/qna.yml", GROUNDED)
    (r1, l1), (r2, l2), (r3, l3) = check_leaves([good, bad, misnamed], tmp_path)
    assert r1.ok and l1 is not None and l1.rel_path == "compositional_skills/grounded/dates/qna.yaml"
    assert not r2.ok and l2 is None
    assert r3.ok and r3.skipped and l3 is None  # a misnamed file is not read
    report, leaf = check_leaf(good, tmp_path)
    assert leaf == l1 and report.kind == "skill"


def test_foundational_leaves_are_marked(tmp_path):
    path = write(tmp_path, "foundational_skills/reasoning/qna.yaml", GROUNDED)
    assert load_leaf(path, tmp_path).foundational


def test_invalid_leaf_is_a_user_error(tmp_path):
    path = write(tmp_path, "compositional_skills/x/qna.yaml", "version: 3\ncreated_by: a\n")
    with pytest.raises(UserError) as err:
        load_leaf(path, tmp_path)
    assert "task_description" in str(err.value) and "unfork taxonomy validate" in err.value.hint
