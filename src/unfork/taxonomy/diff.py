"""Which taxonomy leaves are new or changed: InstructLab's ``taxonomy diff``.

A leaf counts when it is untracked (and not ignored) or differs in any way,
committed, staged or not, from the *merge base*: the first commit on HEAD's
first-parent chain that the base ref contains. Deleted files do not count.
Only files under the top-level ``compositional_skills/`` and ``knowledge/``
folders are leaves, and only when named exactly ``qna.yaml``; case or
extension variants (``QnA.yaml``, ``qna.yml``) are reported apart so the
validator can warn about them instead of silently ignoring a contribution.

InstructLab walks the first-parent chain asking ``git branch --contains`` once
per commit; we get the same commit from two ``rev-list`` calls. One deliberate
difference: for a base that is not a branch (a tag or a SHA) InstructLab diffs
against that commit itself, we use the same merge-base rule as for branches,
which only differs when the base is not on HEAD's first-parent chain (then
InstructLab would also report files changed on the base's side).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from unfork.errors import UserError

TAXONOMY_FOLDERS = ("compositional_skills", "knowledge")
LEAF_NAME = "qna.yaml"
EMPTY_BASE = "empty"


@dataclass
class DiffResult:
    base: str  # the ref as given
    merge_base: str | None  # commit sha, None for "empty"
    leaves: list[Path]  # changed/new qna.yaml files, absolute, sorted
    misnamed: list[Path]  # changed/new look-alikes (qna.yml, QnA.yaml ...), absolute, sorted


def classify(rel_path: str) -> str | None:
    """``"leaf"``, ``"misnamed"`` or None for a path relative to the taxonomy root."""
    path = PurePosixPath(rel_path)
    if len(path.parts) < 2 or path.parts[0] not in TAXONOMY_FOLDERS:
        return None
    if path.name == LEAF_NAME:
        return "leaf"
    if path.name.casefold() in ("qna.yaml", "qna.yml"):
        return "misnamed"
    return None


def _split(root: Path, rel_paths: list[str]) -> tuple[list[Path], list[Path]]:
    leaves, misnamed = set(), set()
    for rel in rel_paths:
        kind = classify(rel)
        if kind == "leaf":
            leaves.add(root / rel)
        elif kind == "misnamed":
            misnamed.add(root / rel)
    return sorted(leaves), sorted(misnamed)


def _check_dir(taxonomy_path: Path) -> Path:
    if not taxonomy_path.exists():
        raise UserError(f"taxonomy folder not found: {taxonomy_path}",
                        hint="pass --taxonomy-path, or clone one: "
                             "git clone https://github.com/instructlab/taxonomy")
    if not taxonomy_path.is_dir():
        raise UserError(f"taxonomy path is not a folder: {taxonomy_path}",
                        hint="point --taxonomy-path at the folder holding compositional_skills/ "
                             "and knowledge/")
    return taxonomy_path.resolve()


def all_leaves(taxonomy_path: Path) -> tuple[list[Path], list[Path]]:
    """Every leaf (and misnamed look-alike) on disk, without asking git."""
    root = _check_dir(Path(taxonomy_path))
    found: list[str] = []
    for folder in TAXONOMY_FOLDERS:
        top = root / folder
        # os.walk does not descend into symlinked folders, like InstructLab's walk.
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if d != ".git"]
            rel_dir = Path(dirpath).relative_to(root).as_posix()
            # A folder named qna.yaml is kept, so that it is reported rather than silently passed over.
            found.extend(f"{rel_dir}/{name}" for name in filenames + [d for d in dirnames if d == LEAF_NAME])
    return _split(root, found)


def _git_env() -> dict[str, str]:
    env = dict(os.environ)
    # Never block on a credential prompt and never take index.lock for a read.
    env.update(GIT_TERMINAL_PROMPT="0", GIT_OPTIONAL_LOCKS="0", LC_ALL="C")
    return env


def _git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              encoding="utf-8", errors="surrogateescape", env=_git_env())
    except FileNotFoundError as err:
        raise UserError("git is not installed or not on PATH",
                        hint="install git, or use --taxonomy-base empty to read every leaf") from err
    if check and proc.returncode != 0:
        raise UserError(f"git {args[0]} failed in {root}: {proc.stderr.strip()}")
    return proc


def _z(output: str) -> list[str]:
    return [p for p in output.split("\0") if p]


def _check_repo(root: Path) -> None:
    proc = _git(root, "rev-parse", "--is-inside-work-tree", check=False)
    # "false" means inside a .git folder or a bare repository: no working tree to diff.
    if "dubious ownership" in proc.stderr:
        raise UserError(f"git refuses to read {root}: it belongs to another user",
                        hint=f"if you trust it: git config --global --add safe.directory '{root}'")
    if proc.returncode != 0 or proc.stdout.strip() != "true":
        raise UserError(
            f"taxonomy folder is not a git repository: {root}",
            hint=f"run 'git init' in it (then commit a base), or use --taxonomy-base {EMPTY_BASE} "
                 "to read every leaf")
    if _git(root, "rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False).returncode:
        raise UserError(f"the taxonomy repository has no commits yet: {root}",
                        hint="commit something first (git add README.md && git commit -m base), "
                             f"or use --taxonomy-base {EMPTY_BASE} to read every leaf")


def _some_refs(root: Path, limit: int = 6) -> list[str]:
    proc = _git(root, "for-each-ref", "--format=%(refname:short)", "refs/heads", "refs/remotes",
                "refs/tags", check=False)
    refs = [r for r in proc.stdout.splitlines() if r and not r.endswith("/HEAD")]
    preferred = [r for r in ("main", "origin/main", "master", "origin/master") if r in refs]
    return (preferred + [r for r in refs if r not in preferred])[:limit]


def _resolve_base(root: Path, base: str) -> str:
    # A leading dash would be read as an option by git.
    proc = None if base.startswith("-") else _git(
        root, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}", check=False)
    if proc is None or proc.returncode != 0:
        refs = _some_refs(root)
        known = ", ".join(refs) if refs else "none"
        raise UserError(
            f"unknown taxonomy base '{base}' in {root}",
            hint=f"existing refs include: {known}. For a remote branch run 'git fetch' first; "
                 f"or use --taxonomy-base {EMPTY_BASE} to read every leaf")
    return proc.stdout.strip()


def merge_base(root: Path, base: str) -> str:
    """The first commit on HEAD's first-parent chain that ``base`` contains."""
    base_sha = _resolve_base(root, base)
    chain = _git(root, "rev-list", "--first-parent", "HEAD").stdout.split()
    # Commits reachable from HEAD but not from base: everything else on the
    # chain is contained in base, so the first chain commit outside this set wins.
    only_head = set(_git(root, "rev-list", "HEAD", "--not", base_sha).stdout.split())
    for commit in chain:
        if commit not in only_head:
            return commit
    shallow = _git(root, "rev-parse", "--is-shallow-repository", check=False).stdout.strip()
    hint = ("this clone is shallow: run 'git fetch --unshallow'" if shallow == "true" else
            f"rebase your work on '{base}', pick another --taxonomy-base, "
            f"or use --taxonomy-base {EMPTY_BASE}")
    raise UserError(f"HEAD and '{base}' share no history in {root}", hint=hint)


def taxonomy_diff(taxonomy_path: Path, base: str = "origin/main") -> DiffResult:
    """New or changed leaves since ``base`` (``"empty"``: every leaf)."""
    root = _check_dir(Path(taxonomy_path))
    if base == EMPTY_BASE:
        leaves, misnamed = all_leaves(root)
        return DiffResult(base, None, leaves, misnamed)
    _check_repo(root)
    mb = merge_base(root, base)
    # Against the working tree, so committed, staged and unstaged changes all
    # show; --relative keeps a taxonomy that is a subfolder of a bigger repo working.
    changed = _git(root, "diff", "--name-only", "-z", "--no-renames", "--diff-filter=d",
                   "--relative", "--no-ext-diff", mb, "--").stdout
    untracked = _git(root, "ls-files", "-z", "--others", "--exclude-standard").stdout
    # ls-files lists an untracked nested repository as "dir/": never a leaf.
    leaves, misnamed = _split(root, _z(changed) + [p for p in _z(untracked) if not p.endswith("/")])
    return DiffResult(base, mb, leaves, misnamed)
