from __future__ import annotations

from pathlib import Path

import pytest

from unfork.errors import UserError
from unfork.taxonomy.leaf import load_leaf

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "taxonomy"


def test_load_example_leaves():
    leaves = {leaf.kind + ("-grounded" if leaf.grounded else ""): leaf
              for leaf in (load_leaf(p, EXAMPLES) for p in sorted(EXAMPLES.rglob("qna.yaml")))}
    assert set(leaves) == {"skill", "skill-grounded", "knowledge"}
    know = leaves["knowledge"]
    assert know.document and know.document.patterns and len(know.document.commit) == 40
    assert len(know.knowledge_seeds) == 5 and all(len(s.qas) == 3 for s in know.knowledge_seeds)
    assert len(know.all_qas()) == 15 and all(qa.context for qa in know.all_qas())
    skill = leaves["skill"]
    assert skill.task_description and len(skill.seeds) >= 5 and not skill.grounded
    assert skill.name == str(Path(skill.rel_path).parent) and len(skill.content_hash) == 64


def test_invalid_leaf_is_a_user_error(tmp_path):
    path = tmp_path / "compositional_skills" / "x" / "qna.yaml"
    path.parent.mkdir(parents=True)
    path.write_text("version: 3\ncreated_by: a\n")
    with pytest.raises(UserError) as err:
        load_leaf(path, tmp_path)
    assert "task_description" in str(err.value) and "unfork taxonomy validate" in err.value.hint
