"""Choosing the leaves to generate from: validated once, foundational skills skipped, reports handed back."""

from __future__ import annotations

import pytest

from tests.taxonomy.test_leaf import GROUNDED, write
from unfork.errors import UserError
from unfork.sdg.run import GenerateRequest, InvalidLeaves, select_leaves
from unfork.taxonomy.leaf import load_leaf


def test_invalid_leaves_raise_with_their_reports_and_print_nothing(tmp_path, capsys):
    write(tmp_path, "compositional_skills/good/qna.yaml", GROUNDED)
    write(tmp_path, "compositional_skills/bad/qna.yaml", "version: 3\ncreated_by: a\n")
    with pytest.raises(InvalidLeaves) as err:
        select_leaves(GenerateRequest(taxonomy=tmp_path, base="empty"))
    assert [r.path for r in err.value.reports] == ["compositional_skills/bad/qna.yaml"]
    assert err.value.message == "1 of the 2 leaves to generate from are not valid"
    assert capsys.readouterr().out == ""  # the command line prints the reports


def test_given_leaves_are_used_as_they_are_without_the_foundational_ones(tmp_path):
    skill = load_leaf(write(tmp_path, "compositional_skills/good/qna.yaml", GROUNDED), tmp_path)
    found = load_leaf(write(tmp_path, "foundational_skills/x/qna.yaml", GROUNDED), tmp_path)
    said = []
    req = GenerateRequest(taxonomy=tmp_path / "not-read", base="main")
    assert select_leaves(req, said.append, [found, skill]) == [skill]
    assert said == ["skipping foundational skill foundational_skills/x/qna.yaml"]
    with pytest.raises(UserError, match="no new or changed leaves"):
        select_leaves(req, said.append, [found])
