"""The quickstart taxonomy and the git repository holding its knowledge document.

The example files ship as package data in ``unfork/examples_data/`` (not in a
top-level ``examples/`` folder) so that ``pip install unfork`` without ``-e``
still has them:

    examples_data/taxonomy/    three leaves: a freeform skill, a grounded skill
                               and a knowledge leaf
    examples_data/documents/marrowvey/
                               the knowledge document (a fictional island)

InstructLab reads a knowledge document by cloning ``document.repo`` and checking
out ``document.commit``. A URL would need the internet and a ``file://`` URL is
machine-specific, so unfork adopts this convention: a ``repo`` that is not a URL
(no ``://`` and no ``git@`` prefix) is a filesystem path, and a relative one is
resolved against the TAXONOMY ROOT (the folder holding ``knowledge/``), never
the current directory. The example leaf says ``repo: .unfork/docs/marrowvey``;
``resolve_document_repo`` builds that repository there when it is missing. The
build is reproducible (fixed author, committer, dates and message, user git
configuration ignored), so ``document.commit`` can pin its SHA and the SHA is
the same on every machine. (InstructLab itself clones a relative path from its
working directory, so ``ilab`` can read this leaf when run from the taxonomy
root.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from unfork.errors import UserError

EXAMPLES_DATA = Path(__file__).resolve().parent.parent / "examples_data"
EXAMPLE_TAXONOMY = EXAMPLES_DATA / "taxonomy"
EXAMPLE_DOCUMENT = EXAMPLES_DATA / "documents" / "marrowvey"
EXAMPLE_DOCS_REPO = ".unfork/docs/marrowvey"  # document.repo of the knowledge leaf
# The commit build_example_docs_repo makes; qna.yaml's document.commit pins it
# and a test keeps the three in step. Editing the document changes it.
EXAMPLE_DOCS_COMMIT = "7e7b8495d844a4a9130119bfe25661d9740487db"

_IDENTITY = "unfork examples"
_EMAIL = "examples@unfork.invalid"
_DATE = "1735689600 +0000"  # 2025-01-01T00:00:00Z, fixed so the SHA is fixed
_MESSAGE = "Add the Marrowvey example knowledge document"

_README = """\
# Example taxonomy for the unfork quickstart

Made by `unfork.taxonomy.examples.prepare_example_taxonomy`. The commit on
`main` (also recorded as `origin/main`, the default --taxonomy-base) holds only
this README and .gitignore; the three leaves below are untracked, as if you had
just written them, so `unfork taxonomy diff` lists them as new:

- compositional_skills/writing/freeform/haiku/qna.yaml (freeform skill)
- compositional_skills/grounded/extraction/event_details/qna.yaml (grounded skill)
- knowledge/geography/islands/marrowvey/qna.yaml (knowledge)

The knowledge leaf's document lives in the git repository `.unfork/docs/marrowvey`
(ignored here): its `document.repo` is a path relative to this folder.
"""


def is_local_repo(repo: str) -> bool:
    """True when ``document.repo`` names a path rather than a URL."""
    return "://" not in repo and not repo.startswith("git@")


def resolve_document_repo(repo: str, taxonomy_root: Path) -> str:
    """What to clone for ``document.repo``: a URL as is, a path made absolute.

    The example repository is built on first use, so a fresh copy of the
    example taxonomy works without any setup step.
    """
    if not is_local_repo(repo):
        return repo
    path = Path(repo).expanduser()
    if not path.is_absolute():
        path = Path(taxonomy_root) / path
    if not path.exists() and Path(repo).as_posix().rstrip("/") == EXAMPLE_DOCS_REPO:
        build_example_docs_repo(path)
    return str(path.resolve())


def _clean_env(**extra: str) -> dict[str, str]:
    # Drop every GIT_* variable (GIT_DEFAULT_HASH, GIT_DIR, ...) and the user's
    # and system's git config: any of them could change the commit or fail it
    # (commit.gpgsign, hooks, i18n.commitEncoding).
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, GIT_TERMINAL_PROMPT="0",
               GIT_AUTHOR_NAME=_IDENTITY, GIT_AUTHOR_EMAIL=_EMAIL, GIT_AUTHOR_DATE=_DATE,
               GIT_COMMITTER_NAME=_IDENTITY, GIT_COMMITTER_EMAIL=_EMAIL, GIT_COMMITTER_DATE=_DATE)
    env.update(extra)
    return env


def _git(cwd: Path, *args: str) -> str:
    cmd = ["git", "-c", "init.defaultBranch=main", "-c", "core.autocrlf=false",
           "-c", "commit.gpgsign=false", *args]
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=_clean_env(), capture_output=True, text=True)
    except FileNotFoundError as err:
        raise UserError("git is not installed or not on PATH",
                        hint="install git: the example knowledge document is read from a git repository") from err
    if proc.returncode != 0:
        raise UserError(f"git {args[0]} failed in {cwd}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def _head(repo: Path) -> str | None:
    proc = subprocess.run(["git", "rev-parse", "--verify", "--quiet", "HEAD"], cwd=repo,
                          env=_clean_env(), capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def build_example_docs_repo(dest: Path) -> tuple[Path, str]:
    """Create the example document repository at ``dest``; return it and its commit.

    Reuses ``dest`` when it already holds the pinned commit. Builds in a
    temporary sibling folder and renames it into place, so an interrupted build
    never leaves a half-made repository that looks finished.
    """
    dest = Path(dest).absolute()
    if dest.exists():
        if (dest / ".git").exists() and _head(dest) == EXAMPLE_DOCS_COMMIT:
            return dest, EXAMPLE_DOCS_COMMIT
        if any(dest.iterdir()):
            raise UserError(f"{dest} exists and is not the example document repository",
                            hint="remove it; unfork rebuilds it")
        dest.rmdir()
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        _git(work, "init", "-q", "--template=")
        for src in sorted(EXAMPLE_DOCUMENT.iterdir()):
            if src.is_file():
                # Byte-identical on every machine, whatever a checkout did to line endings.
                (work / src.name).write_bytes(src.read_bytes().replace(b"\r\n", b"\n"))
        _git(work, "add", "--all")
        _git(work, "commit", "-q", "--no-verify", "-m", _MESSAGE)
        sha = _git(work, "rev-parse", "HEAD")
        work.rename(dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return dest, sha


def prepare_example_taxonomy(dest: Path) -> Path:
    """Copy the example taxonomy to ``dest`` as a git repository ready for the quickstart.

    ``main`` holds a README only and the leaves stay untracked, which is the
    state of a contributor who has just written them: ``taxonomy diff`` against
    ``main`` (or the default ``origin/main``, recorded as a plain ref since
    there is no remote) lists exactly the three leaves.
    """
    dest = Path(dest).absolute()
    if dest.exists() and any(dest.iterdir()):
        raise UserError(f"{dest} is not empty", hint="pick a new folder for the example taxonomy")
    shutil.copytree(EXAMPLE_TAXONOMY, dest, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (dest / "README.md").write_text(_README, encoding="utf-8")
    (dest / ".gitignore").write_text(".unfork/\n", encoding="utf-8")
    _git(dest, "init", "-q", "--template=")
    _git(dest, "add", "README.md", ".gitignore")
    _git(dest, "commit", "-q", "--no-verify", "-m", "Example taxonomy: base commit without leaves")
    _git(dest, "update-ref", "refs/remotes/origin/main", "HEAD")
    _, sha = build_example_docs_repo(dest / EXAMPLE_DOCS_REPO)
    if sha != EXAMPLE_DOCS_COMMIT:
        raise RuntimeError(f"example document repository built as {sha}, but {EXAMPLE_DOCS_COMMIT} is "
                           "pinned: update EXAMPLE_DOCS_COMMIT and the knowledge qna.yaml")
    return dest
