"""The quickstart taxonomy: lint-clean leaves and a reproducible document repository."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

from unfork.errors import UserError
from unfork.taxonomy.diff import all_leaves, taxonomy_diff
from unfork.taxonomy.examples import (
    EXAMPLE_DOCS_COMMIT,
    EXAMPLE_DOCS_REPO,
    EXAMPLE_DOCUMENT,
    EXAMPLE_TAXONOMY,
    build_example_docs_repo,
    prepare_example_taxonomy,
    resolve_document_repo,
)

LEAVES = [
    "compositional_skills/grounded/extraction/event_details/qna.yaml",
    "compositional_skills/writing/freeform/haiku/qna.yaml",
    "knowledge/geography/islands/marrowvey/qna.yaml",
]
KNOWLEDGE = EXAMPLE_TAXONOMY / LEAVES[2]
# The rules the brief asks for, and InstructLab's own default (lines up to 120).
LINT_CONFIGS = ["{extends: relaxed, rules: {line-length: disable}}",
                "{extends: relaxed, rules: {line-length: {max: 120}}}"]


def load(rel: str) -> dict:
    return yaml.safe_load((EXAMPLE_TAXONOMY / rel).read_text(encoding="utf-8"))


def words(text: str) -> int:
    return len(text.split())


def squash(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def hostile_git(monkeypatch, tmp_path):
    """User git settings and variables that would change or break a naive commit."""
    config = tmp_path / "hostile.gitconfig"
    config.write_text("[commit]\n\tgpgsign = true\n[core]\n\tautocrlf = true\n"
                      "[i18n]\n\tcommitEncoding = ISO-8859-1\n[init]\n\tdefaultBranch = trunk\n",
                      encoding="utf-8")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Somebody Else")
    monkeypatch.setenv("GIT_COMMITTER_DATE", "2001-02-03T04:05:06")
    monkeypatch.setenv("GIT_DEFAULT_HASH", "sha256")


def test_example_tree_has_exactly_three_leaves_with_attribution():
    leaves, misnamed = all_leaves(EXAMPLE_TAXONOMY)
    assert [p.relative_to(EXAMPLE_TAXONOMY).as_posix() for p in leaves] == LEAVES
    assert misnamed == []
    for leaf in leaves:
        attribution = (leaf.parent / "attribution.txt").read_text(encoding="utf-8")
        for field in ("Title of work:", "Link to work:", "License of the work:", "Creator names:"):
            assert field in attribution, (leaf, field)


@pytest.mark.parametrize("rel", LEAVES)
@pytest.mark.parametrize("rules", LINT_CONFIGS)
def test_leaves_are_lint_clean(rel, rules):
    text = (EXAMPLE_TAXONOMY / rel).read_text(encoding="utf-8")
    problems = list(linter.run(text, YamlLintConfig(rules)))
    assert problems == [], [f"{p.line}:{p.column} {p.rule} {p.message}" for p in problems]


@pytest.mark.parametrize("rel", LEAVES)
def test_leaves_follow_the_version_3_shape(rel):
    leaf = load(rel)
    assert leaf["version"] == 3 and leaf["created_by"]
    examples = leaf["seed_examples"]
    assert len(examples) >= 5
    if rel.startswith("knowledge/"):
        assert set(leaf) == {"version", "domain", "created_by", "seed_examples", "document_outline",
                             "document"}
        assert len(examples) == 5
        for ex in examples:
            assert set(ex) == {"context", "questions_and_answers"}
            assert len(ex["questions_and_answers"]) == 3
        pairs = [qa for ex in examples for qa in ex["questions_and_answers"]]
    else:
        assert set(leaf) == {"version", "task_description", "created_by", "seed_examples"}
        grounded = "/grounded/" in rel
        for ex in examples:
            assert set(ex) == ({"context", "question", "answer"} if grounded else {"question", "answer"})
        pairs = examples
    for qa in pairs:
        assert 0 < words(qa["question"]) < 250 and 0 < words(qa["answer"]) < 250
    for ex in examples:
        assert words(ex.get("context", "")) < 500
    # A grounded skill may ask the same question of different contexts.
    keys = {squash(qa.get("context", "") + qa["question"]) for qa in pairs}
    assert len(keys) == len(pairs), "duplicate seed questions"


def test_knowledge_contexts_are_taken_from_the_document():
    leaf = load(LEAVES[2])
    document = (EXAMPLE_DOCUMENT / leaf["document"]["patterns"][0]).read_text(encoding="utf-8")
    assert 1500 <= words(document) <= 2500
    for ex in leaf["seed_examples"]:
        assert squash(ex["context"]) in squash(document)


def test_grounded_answers_are_the_json_they_claim_to_be():

    for ex in load(LEAVES[0])["seed_examples"]:
        record = json.loads(ex["answer"])
        assert set(record) == {"name", "date", "time", "location", "price"}
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", record["date"])
        assert record["time"] is None or re.fullmatch(r"\d{2}:\d{2}", record["time"])


def test_docs_repo_sha_is_pinned_and_stable(tmp_path, hostile_git):
    first, sha1 = build_example_docs_repo(tmp_path / "a" / "marrowvey")
    second, sha2 = build_example_docs_repo(tmp_path / "b" / "deeper" / "docs")
    assert sha1 == sha2 == EXAMPLE_DOCS_COMMIT
    assert load(LEAVES[2])["document"]["commit"] == EXAMPLE_DOCS_COMMIT
    assert (first / "marrowvey.md").is_file() and (second / "marrowvey.md").is_file()
    # A second call reuses the finished repository.
    assert build_example_docs_repo(first) == (first, EXAMPLE_DOCS_COMMIT)
    assert sorted(p.name for p in first.parent.iterdir()) == ["marrowvey"]  # no temp leftovers


def test_docs_repo_refuses_to_overwrite_other_files(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "mine.txt").write_text("keep me\n", encoding="utf-8")
    with pytest.raises(UserError, match="not the example document repository"):
        build_example_docs_repo(tmp_path / "docs")
    assert (tmp_path / "docs" / "mine.txt").read_text(encoding="utf-8") == "keep me\n"


def test_resolve_document_repo(tmp_path):
    url = "https://github.com/example/docs.git"
    assert resolve_document_repo(url, tmp_path) == url
    assert resolve_document_repo("git@github.com:example/docs.git", tmp_path).startswith("git@")
    assert resolve_document_repo("other/docs", tmp_path) == str((tmp_path / "other/docs").resolve())
    assert not (tmp_path / "other").exists()  # only the example repository is built on demand
    built = Path(resolve_document_repo(EXAMPLE_DOCS_REPO, tmp_path))
    assert built == (tmp_path / EXAMPLE_DOCS_REPO).resolve()
    assert (built / "marrowvey.md").is_file()


def test_prepared_taxonomy_diff_lists_the_three_leaves(tmp_path, hostile_git):
    root = prepare_example_taxonomy(tmp_path / "taxonomy")
    for base in ("main", "origin/main"):
        result = taxonomy_diff(root, base)
        assert [p.relative_to(root).as_posix() for p in result.leaves] == LEAVES
        assert result.misnamed == []
    # The knowledge leaf's repo resolves to a clonable repository at the pinned commit,
    # which is what the SDG stage does with it.
    leaf = yaml.safe_load((root / LEAVES[2]).read_text(encoding="utf-8"))
    source = resolve_document_repo(leaf["document"]["repo"], root)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", source, str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "-c", "advice.detachedHead=false", "checkout", "-q",
                    leaf["document"]["commit"]], check=True)
    assert (clone / leaf["document"]["patterns"][0]).is_file()


def test_prepare_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x", encoding="utf-8")
    with pytest.raises(UserError, match="not empty"):
        prepare_example_taxonomy(tmp_path / "taken")
