"""taxonomy_diff against real git repositories built in temporary folders."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from unfork.errors import UserError
from unfork.taxonomy.diff import all_leaves, classify, taxonomy_diff

SKILL = "compositional_skills/writing/haiku/qna.yaml"
KNOW = "knowledge/history/island/qna.yaml"


@pytest.fixture(autouse=True)
def git_identity(monkeypatch, tmp_path):
    # Tests must not depend on (or be broken by) the user's git configuration.
    for key, value in {
        "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.com",
        "GIT_CONFIG_GLOBAL": str(tmp_path / "gitconfig"), "GIT_CONFIG_NOSYSTEM": "1",
    }.items():
        monkeypatch.setenv(key, value)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def write(repo: Path, rel: str, text: str = "version: 3\n") -> Path:
    path = repo / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def commit(repo: Path, message: str, *paths: str) -> str:
    git(repo, "add", "--", *(paths or ["."]))
    git(repo, "commit", "-q", "--no-verify", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path) -> Path:
    """A taxonomy with one leaf on main and a work branch checked out."""
    root = tmp_path / "taxonomy"
    root.mkdir()
    git(root, "-c", "init.defaultBranch=main", "init", "-q")
    write(root, "README.md", "taxonomy\n")
    write(root, "compositional_skills/old/qna.yaml")
    commit(root, "base")
    git(root, "checkout", "-q", "-b", "work")
    return root


def rels(root: Path, paths: list[Path]) -> list[str]:
    return [p.relative_to(root.resolve()).as_posix() for p in paths]


def test_classify_follows_instructlab_naming():
    assert classify(SKILL) == "leaf"
    assert classify(KNOW) == "leaf"
    assert classify("knowledge/a/QnA.yaml") == "misnamed"
    assert classify("knowledge/a/qna.yml") == "misnamed"
    assert classify("knowledge/a/QNA.YML") == "misnamed"
    assert classify("knowledge/a/other.yaml") is None
    assert classify("foundational_skills/a/qna.yaml") is None  # not a diffed folder
    assert classify("docs/qna.yaml") is None
    assert classify("qna.yaml") is None


def test_nothing_changed(repo):
    result = taxonomy_diff(repo, "main")
    assert result.leaves == [] and result.misnamed == []
    assert result.merge_base == git(repo, "rev-parse", "main")
    assert result.base == "main"


def test_committed_staged_unstaged_and_untracked(repo):
    write(repo, SKILL)
    commit(repo, "committed leaf")
    write(repo, "knowledge/staged/qna.yaml")
    git(repo, "add", "knowledge/staged/qna.yaml")
    write(repo, "compositional_skills/old/qna.yaml", "version: 3\nchanged: yes\n")  # unstaged
    write(repo, "knowledge/untracked/qna.yaml")
    write(repo, "knowledge/untracked/notes.md", "not a leaf\n")
    result = taxonomy_diff(repo, "main")
    assert rels(repo, result.leaves) == [
        "compositional_skills/old/qna.yaml",
        SKILL,
        "knowledge/staged/qna.yaml",
        "knowledge/untracked/qna.yaml",
    ]
    assert all(p.is_absolute() for p in result.leaves)


def test_ignored_and_deleted_leaves_are_excluded(repo):
    write(repo, ".gitignore", "scratch/\n")
    write(repo, "knowledge/scratch/qna.yaml")  # ignored by the pattern above
    commit(repo, "ignore", ".gitignore")
    git(repo, "rm", "-q", "compositional_skills/old/qna.yaml")
    commit(repo, "delete a leaf")
    write(repo, SKILL)
    commit(repo, "add then delete in the working tree", SKILL)
    (repo / SKILL).unlink()  # unstaged deletion of a committed leaf
    assert taxonomy_diff(repo, "main").leaves == []


def test_renamed_leaf_reports_the_new_path(repo):
    git(repo, "mv", "compositional_skills/old", "compositional_skills/new")
    commit(repo, "rename")
    result = taxonomy_diff(repo, "main")
    assert rels(repo, result.leaves) == ["compositional_skills/new/qna.yaml"]


def test_changes_on_base_after_fork_are_not_reported(repo):
    git(repo, "checkout", "-q", "main")
    write(repo, "knowledge/upstream/qna.yaml")
    commit(repo, "upstream moves on")
    git(repo, "checkout", "-q", "work")
    write(repo, SKILL)
    commit(repo, "mine")
    result = taxonomy_diff(repo, "main")
    assert rels(repo, result.leaves) == [SKILL]
    assert result.merge_base == git(repo, "rev-parse", "main~1")


def test_merge_base_follows_first_parent_chain(repo):
    fork = git(repo, "rev-parse", "main")
    # A side branch merged into work: its leaf is part of work's changes.
    git(repo, "checkout", "-q", "-b", "side")
    write(repo, "knowledge/side/qna.yaml")
    commit(repo, "side leaf")
    git(repo, "checkout", "-q", "work")
    write(repo, SKILL)
    commit(repo, "work leaf")
    git(repo, "merge", "-q", "--no-ff", "--no-edit", "side")
    # main later merges side too: side's commit is now in main, but the first
    # commit on work's first-parent chain contained in main is still the fork.
    git(repo, "checkout", "-q", "main")
    git(repo, "merge", "-q", "--no-ff", "--no-edit", "side")
    git(repo, "checkout", "-q", "work")
    result = taxonomy_diff(repo, "main")
    assert result.merge_base == fork
    assert rels(repo, result.leaves) == [SKILL, "knowledge/side/qna.yaml"]


def test_merge_of_base_into_work_moves_the_merge_base(repo):
    write(repo, SKILL)
    commit(repo, "mine")
    git(repo, "checkout", "-q", "main")
    write(repo, "knowledge/upstream/qna.yaml")
    upstream = commit(repo, "upstream")
    git(repo, "checkout", "-q", "work")
    git(repo, "merge", "-q", "--no-edit", "main")
    # The merge commit is on work's first-parent chain but not in main; its
    # parent "mine" is not in main either; the fork point is.
    result = taxonomy_diff(repo, "main")
    assert result.merge_base == git(repo, "rev-parse", f"{upstream}~1")
    assert rels(repo, result.leaves) == [SKILL, "knowledge/upstream/qna.yaml"]


def test_remote_tracking_base_and_sha_base(repo, tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--branch", "main", str(repo), str(clone)], check=True)
    write(clone, SKILL)
    commit(clone, "mine")
    assert rels(clone, taxonomy_diff(clone, "origin/main").leaves) == [SKILL]
    sha = git(clone, "rev-parse", "origin/main")
    assert taxonomy_diff(clone, sha).merge_base == sha


def test_misnamed_leaves_are_returned_apart(repo):
    write(repo, "knowledge/a/QnA.yaml")
    write(repo, "compositional_skills/b/qna.yml")
    write(repo, "knowledge/c/qna.yaml")
    result = taxonomy_diff(repo, "main")
    assert rels(repo, result.leaves) == ["knowledge/c/qna.yaml"]
    assert rels(repo, result.misnamed) == ["compositional_skills/b/qna.yml", "knowledge/a/QnA.yaml"]


def test_paths_with_spaces_and_unicode(repo):
    odd = "knowledge/Île de café/sub dir/qna.yaml"
    write(repo, odd)
    write(repo, "compositional_skills/tab\there/qna.yaml")
    commit(repo, "odd names")
    result = taxonomy_diff(repo, "main")
    assert sorted(rels(repo, result.leaves)) == sorted([odd, "compositional_skills/tab\there/qna.yaml"])
    assert all(p.exists() for p in result.leaves)


def test_taxonomy_in_a_subfolder_of_a_repo(tmp_path):
    outer = tmp_path / "outer"
    outer.mkdir()
    git(outer, "-c", "init.defaultBranch=main", "init", "-q")
    write(outer, "taxonomy/README.md", "x\n")
    write(outer, "knowledge/outside/qna.yaml")  # not part of the taxonomy
    commit(outer, "base")
    write(outer, f"taxonomy/{SKILL}")
    result = taxonomy_diff(outer / "taxonomy", "main")
    assert rels(outer / "taxonomy", result.leaves) == [SKILL]


def test_empty_base_reads_every_leaf_without_git(tmp_path):
    root = tmp_path / "plain"
    for rel in (SKILL, KNOW, "knowledge/x/qna.yml", "foundational_skills/y/qna.yaml",
                "knowledge/.git/qna.yaml", "README.md"):
        write(root, rel)
    result = taxonomy_diff(root, "empty")
    assert result.merge_base is None
    assert rels(root, result.leaves) == [SKILL, KNOW]
    assert rels(root, result.misnamed) == ["knowledge/x/qna.yml"]
    assert all_leaves(root) == (result.leaves, result.misnamed)


def test_missing_folder(tmp_path):
    with pytest.raises(UserError, match="not found"):
        taxonomy_diff(tmp_path / "nope", "main")
    with pytest.raises(UserError, match="not found"):
        all_leaves(tmp_path / "nope")


def test_not_a_repository(tmp_path):
    write(tmp_path / "plain", SKILL)
    with pytest.raises(UserError, match="not a git repository") as err:
        taxonomy_diff(tmp_path / "plain", "main")
    assert "git init" in err.value.hint and "empty" in err.value.hint


def test_repository_without_commits(tmp_path):
    root = tmp_path / "fresh"
    root.mkdir()
    git(root, "init", "-q")
    with pytest.raises(UserError, match="no commits"):
        taxonomy_diff(root, "main")


def test_unknown_base_lists_existing_refs(repo):
    with pytest.raises(UserError, match="unknown taxonomy base 'origin/main'") as err:
        taxonomy_diff(repo, "origin/main")
    assert "main" in err.value.hint and "work" in err.value.hint
    assert "git fetch" in err.value.hint
    with pytest.raises(UserError, match="unknown taxonomy base"):
        taxonomy_diff(repo, "--all")


def test_no_common_history(repo):
    git(repo, "checkout", "-q", "--orphan", "lonely")
    write(repo, KNOW)
    commit(repo, "unrelated root")
    with pytest.raises(UserError, match="share no history"):
        taxonomy_diff(repo, "main")


def test_user_git_config_does_not_change_the_answer(repo, tmp_path):
    # Rename and relative-path settings that would alter porcelain output.
    (tmp_path / "gitconfig").write_text("[diff]\n\trenames = copies\n\trelative = false\n"
                                        "[core]\n\tquotePath = true\n", encoding="utf-8")
    git(repo, "mv", "compositional_skills/old", "compositional_skills/naïve")
    commit(repo, "rename")
    assert rels(repo, taxonomy_diff(repo, "main").leaves) == ["compositional_skills/naïve/qna.yaml"]
