"""Knowledge documents: fetching from real git repositories and reading them as text."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from tests.conftest import missing
from unfork.documents import fetch as documents
from unfork.documents.convert import Document
from unfork.documents.fetch import fetch_documents
from unfork.errors import MissingExtraError, UserError
from unfork.paths import get_paths
from unfork.taxonomy.examples import EXAMPLE_DOCS_COMMIT, EXAMPLE_DOCUMENT, prepare_example_taxonomy

KNOWLEDGE_LEAF = "knowledge/geography/islands/marrowvey/qna.yaml"


# ----------------------------------------------------------------------- helpers


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, **extra)
    return env


def git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "init.defaultBranch=main",
         "-c", "commit.gpgsign=false", "-c", "protocol.file.allow=always", *args],
        cwd=cwd, env=env or _env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def make_repo(path: Path, files: dict[str, str | bytes], links: dict[str, str] | None = None) -> str:
    """A git repository at ``path`` holding ``files`` and symbolic ``links``; returns HEAD."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "--template=")
    for name, content in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
    for name, target in (links or {}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, path / name)
    git(path, "add", "--all")
    git(path, "commit", "-q", "--no-verify", "-m", "documents")
    return git(path, "rev-parse", "HEAD")


def fetch(root: Path, repo: str, commit: str, patterns: list[str], **kw) -> list[Document]:
    return fetch_documents(repo, commit, patterns, taxonomy_root=root, **kw)


@pytest.fixture
def docs_repo(tmp_path) -> tuple[Path, str]:
    """A taxonomy root with a document repository ``docs`` beside knowledge/."""
    root = tmp_path / "taxonomy"
    sha = make_repo(root / "docs", {
        "a.md": "# A\n\nAlpha.\n",
        "b.txt": "Bravo.\n",
        ".hidden.md": "hidden\n",
        "docs/x.md": "X file\n",
        "docs/y.md": "Y file\n",
        "docs/deep/z.md": "Z file\n",
        "docs/img.png": b"\x89PNG\r\n\x1a\n\0\0",
        "crlf.md": b"\xef\xbb\xbfline one\r\nline two\r\n",
    })
    return root, sha


def _sources(docs: list[Document]) -> list[str]:
    return [d.source for d in docs]


# ------------------------------------------------------------------------ fetching


def test_example_leaf_reads_the_bundled_document(tmp_path):
    root = prepare_example_taxonomy(tmp_path / "taxonomy")
    document = yaml.safe_load((root / KNOWLEDGE_LEAF).read_text())["document"]
    docs = fetch(root, document["repo"], document["commit"], document["patterns"])
    assert _sources(docs) == ["marrowvey.md"]
    assert docs[0].text == (EXAMPLE_DOCUMENT / "marrowvey.md").read_text(encoding="utf-8")
    entries = list((get_paths().cache_dir / "documents").iterdir())  # the default cache, under UNFORK_HOME
    assert [e.name.split("-")[0] for e in entries] == ["marrowvey"]


def test_example_repository_is_built_when_missing(tmp_path):
    root = prepare_example_taxonomy(tmp_path / "taxonomy")
    subprocess.run(["rm", "-rf", str(root / ".unfork")], check=True)
    docs = fetch(root, ".unfork/docs/marrowvey", EXAMPLE_DOCS_COMMIT, ["*.md"])
    assert _sources(docs) == ["marrowvey.md"]


def test_second_fetch_is_served_from_cache_without_git_fetch(docs_repo, monkeypatch):
    root, sha = docs_repo
    calls: list[str] = []
    real_git = documents._git

    def counting_git(args, **kw):
        calls.append(args[0])
        return real_git(args, **kw)

    monkeypatch.setattr(documents, "_git", counting_git)
    first = fetch(root, "docs", sha, ["*.md"])
    assert calls.count("fetch") == 1 and "init" in calls
    calls.clear()
    # the source is gone: only the cache can answer
    subprocess.run(["rm", "-rf", str(root / "docs")], check=True)
    assert fetch(root, "docs", sha, ["*.md"]) == first
    assert "fetch" not in calls and "init" not in calls


def test_patterns_follow_glob_rules(docs_repo):
    root, sha = docs_repo
    assert _sources(fetch(root, "docs", sha, ["*.md"])) == ["a.md", "crlf.md"]  # no hidden file, no subfolder
    assert _sources(fetch(root, "docs", sha, ["docs/*.md"])) == ["docs/x.md", "docs/y.md"]
    assert _sources(fetch(root, "docs", sha, ["docs/**/*.md"])) == [
        "docs/deep/z.md", "docs/x.md", "docs/y.md"]
    assert _sources(fetch(root, "docs", sha, ["**/z.md"])) == ["docs/deep/z.md"]
    assert _sources(fetch(root, "docs", sha, [".hidden.md", "./b.txt"])) == [".hidden.md", "b.txt"]
    # pattern order first, each file once; a wildcard skips types it cannot read (img.png)
    assert _sources(fetch(root, "docs", sha, ["docs/y.md", "docs/*"])) == ["docs/y.md", "docs/x.md"]


def test_text_is_decoded_and_line_endings_normalised(docs_repo):
    root, sha = docs_repo
    [doc] = fetch(root, "docs", sha, ["crlf.md"])
    assert doc.text == "line one\nline two\n"


def test_pattern_matching_nothing_lists_the_files(docs_repo):
    root, sha = docs_repo
    with pytest.raises(UserError, match="matches no file") as err:
        fetch(root, "docs", sha, ["*.md", "missing/*.md"])
    assert "missing/*.md" in err.value.message
    assert "a.md" in err.value.hint and "docs/deep/z.md" in err.value.hint
    with pytest.raises(UserError, match="names a folder") as err:
        fetch(root, "docs", sha, ["docs/"])
    assert "docs/*.md" in err.value.hint


def test_credentials_in_a_url_stay_out_of_messages(tmp_path):
    root = tmp_path / "taxonomy"
    root.mkdir()
    with pytest.raises(UserError) as err:
        fetch(root, "https://someone:s3cret-token@127.0.0.1:9/docs.git", "1" * 40, ["*.md"])
    assert "s3cret" not in str(err.value) and "https://127.0.0.1:9/docs.git" in str(err.value)


@pytest.mark.parametrize("pattern", ["../secret.md", "docs/../../secret.md", "/etc/passwd", "~/notes.md",
                                     "C:/notes.md", "\\\\server\\share.md", "", "./"])
def test_patterns_can_never_leave_the_repository(docs_repo, pattern):
    root, sha = docs_repo
    (root / "secret.md").write_text("secret\n")
    with pytest.raises(UserError):
        fetch(root, "docs", sha, [pattern])
    assert not (get_paths().cache_dir / "documents").exists()  # refused before any git command


def test_symlinks_inside_are_followed_outside_refused(tmp_path):
    root = tmp_path / "taxonomy"
    (tmp_path / "outside.md").write_text("outside\n")
    sha = make_repo(root / "docs", {"docs/x.md": "X file\n", "other.md": "other\n"}, links={
        "inside.md": "docs/x.md",
        "docs/up.md": "../other.md",
        "passwd.md": "/etc/passwd",
        "escape.md": "../outside.md",
        "sneaky.md": "docs/../../outside.md",
        "etc": "/etc",
        "gone.md": "missing.md",
        "loop1.md": "loop2.md",
        "loop2.md": "loop1.md",
        "folder": "docs",
    })
    assert [d.text for d in fetch(root, "docs", sha, ["inside.md", "docs/up.md"])] == ["X file\n", "other\n"]
    for name in ["passwd.md", "escape.md", "sneaky.md"]:
        with pytest.raises(UserError, match="outside the document repository"):
            fetch(root, "docs", sha, [name])
    with pytest.raises(UserError, match="outside the document repository"):
        fetch(root, "docs", sha, ["*.md"])  # a wildcard gives no way round the check
    with pytest.raises(UserError, match="matches no file"):
        fetch(root, "docs", sha, ["etc/passwd"])  # never a path through a link to a folder outside
    with pytest.raises(UserError, match="not a file in the repository"):
        fetch(root, "docs", sha, ["gone.md"])
    with pytest.raises(UserError, match="too many levels"):
        fetch(root, "docs", sha, ["loop1.md"])
    with pytest.raises(UserError, match="not a file in the repository"):
        fetch(root, "docs", sha, ["folder"])


def test_submodules_are_not_fetched(tmp_path):
    root = tmp_path / "taxonomy"
    make_repo(tmp_path / "sub", {"inner.md": "from the submodule\n"})
    sha = make_repo(root / "docs", {"main.md": "main\n"})
    git(root / "docs", "submodule", "add", "-q", str(tmp_path / "sub"), "sub")
    git(root / "docs", "commit", "-q", "-m", "add a submodule")
    sha = git(root / "docs", "rev-parse", "HEAD")
    assert _sources(fetch(root, "docs", sha, ["*.md", "**/*.md"])) == ["main.md"]
    with pytest.raises(UserError, match="submodule"):
        fetch(root, "docs", sha, ["sub/*.md"])
    with pytest.raises(UserError, match="submodule"):
        fetch(root, "docs", sha, ["sub"])
    [entry] = (get_paths().cache_dir / "documents").iterdir()
    assert not (entry / "modules").exists()
    assert "from the submodule" not in subprocess.run(["grep", "-r", "from the submodule", str(entry)],
                                                      capture_output=True, text=True).stdout


def test_no_filter_or_hook_runs_whatever_the_configuration(tmp_path, monkeypatch):
    """A repository's .gitattributes names filters; a user's git config defines them.

    The test first proves the trap is armed (a plain clone with that
    environment runs the filters and the hook), then that fetch_documents runs
    none of them and returns the committed bytes.
    """
    root = tmp_path / "taxonomy"
    marker = tmp_path / "markers"
    marker.mkdir()
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "post-checkout").write_text(f"#!/bin/sh\ntouch {marker}/hook\n")
    (hooks / "post-checkout").chmod(0o755)
    config = tmp_path / "evil.gitconfig"
    config.write_text(
        f'[filter "evil"]\n\tsmudge = "touch {marker}/evil; cat"\n\tclean = cat\n\trequired = true\n'
        f'[filter "lfs"]\n\tsmudge = "touch {marker}/lfs; cat"\n'
        f"[core]\n\thooksPath = {hooks}\n")
    sha = make_repo(root / "docs", {
        ".gitattributes": "*.md filter=evil\n*.txt filter=lfs diff=lfs merge=lfs\n",
        "doc.md": "the committed text\n",
        "notes.txt": "plain notes\n",
    })
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(config.read_text())
    armed = {"HOME": str(home), "GIT_CONFIG_GLOBAL": str(config), "GIT_CONFIG_SYSTEM": str(config),
             "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "filter.evil.smudge",
             "GIT_CONFIG_VALUE_0": f"touch {marker}/env; cat"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | armed
    clone = subprocess.run(["git", "clone", "-q", str(root / "docs"), str(tmp_path / "plain")], env=env,
                           capture_output=True, text=True)
    assert clone.returncode == 0, clone.stderr
    assert {p.name for p in marker.iterdir()} == {"env", "lfs", "hook"}  # the trap works on a plain clone
    for p in marker.iterdir():
        p.unlink()

    for name, value in armed.items():
        monkeypatch.setenv(name, value)
    docs = fetch(root, "docs", sha, ["*.md", "*.txt"])
    assert [(d.source, d.text) for d in docs] == [("doc.md", "the committed text\n"),
                                                  ("notes.txt", "plain notes\n")]
    assert list(marker.iterdir()) == []


def test_lfs_pointer_is_reported(tmp_path):
    root = tmp_path / "taxonomy"
    pointer = ("version https://git-lfs.github.com/spec/v1\n"
               "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n")
    sha = make_repo(root / "docs", {"big.md": pointer})
    with pytest.raises(UserError, match="Git LFS pointer"):
        fetch(root, "docs", sha, ["big.md"])


@pytest.mark.parametrize(("name", "content", "message"), [
    ("latin1.md", b"caf\xe9 au lait\n", "not UTF-8 text"),
    ("nul.txt", b"text\0with a NUL\n", "binary file"),
    ("empty.md", b"  \n\n", "is empty"),
    ("report.docx", b"PK\x03\x04", "not a supported type"),
    ("broken.pdf", b"%PDF-1.4\nnot really a pdf", "cannot read the PDF|no text layer"),
])
def test_unreadable_files_are_refused_clearly(tmp_path, name, content, message):
    pytest.importorskip("pypdf") if name.endswith(".pdf") else None
    root = tmp_path / "taxonomy"
    sha = make_repo(root / "docs", {name: content})
    with pytest.raises(UserError, match=message):
        fetch(root, "docs", sha, [name])


def test_wildcard_matching_only_unsupported_types_is_an_error(docs_repo):
    root, sha = docs_repo
    with pytest.raises(UserError, match=r"docs/img\.png \(not a supported type"):
        fetch(root, "docs", sha, ["docs/*.png"])


def _tiny_pdf(text: str) -> bytes:
    """A one-page PDF written by hand: a Helvetica text line, with a correct xref table."""
    stream = f"BT /F1 14 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_pdf_text_is_extracted(tmp_path):
    try:
        import pypdf  # noqa: F401
    except ImportError:
        missing("pypdf is not installed: pip install 'unfork[pdf]'")
    root = tmp_path / "taxonomy"
    pdf = _tiny_pdf("The Glasslight Festival lasts nine nights.")
    sha = make_repo(root / "docs", {"guide/festival.pdf": pdf})
    [doc] = fetch(root, "docs", sha, ["guide/*.pdf"])
    assert doc.source == "guide/festival.pdf"
    assert "The Glasslight Festival lasts nine nights." in doc.text


def test_pdf_without_pypdf_names_the_extra(tmp_path, monkeypatch):
    root = tmp_path / "taxonomy"
    sha = make_repo(root / "docs", {"festival.pdf": _tiny_pdf("Nine nights.")})
    monkeypatch.setitem(sys.modules, "pypdf", None)  # import pypdf now raises ImportError
    with pytest.raises(MissingExtraError) as err:
        fetch(root, "docs", sha, ["festival.pdf"])
    assert "unfork[pdf]" in str(err.value) and "pypdf" in str(err.value)


def test_missing_git_is_a_user_error(docs_repo, monkeypatch):
    root, sha = docs_repo
    monkeypatch.setenv("PATH", str(root))  # a PATH without git
    with pytest.raises(UserError, match="git is not installed"):
        fetch(root, "docs", sha, ["a.md"])


def test_commits_short_missing_and_not_a_sha(docs_repo):
    root, sha = docs_repo
    assert _sources(fetch(root, "docs", sha[:10], ["a.md"])) == ["a.md"]
    with pytest.raises(UserError, match="is not in the document repository") as err:
        fetch(root, "docs", "0" * 40, ["a.md"])
    assert "push" in err.value.hint
    with pytest.raises(UserError, match="not a commit SHA"):
        fetch(root, "docs", "main", ["a.md"])


def test_an_older_commit_is_read_as_it_was(tmp_path):
    root = tmp_path / "taxonomy"
    first = make_repo(root / "docs", {"a.md": "first version\n"})
    (root / "docs" / "a.md").write_text("second version\n")
    git(root / "docs", "commit", "-q", "-am", "edit")
    second = git(root / "docs", "rev-parse", "HEAD")
    (root / "docs" / "a.md").write_text("uncommitted\n")
    assert fetch(root, "docs", first, ["a.md"])[0].text == "first version\n"
    assert fetch(root, "docs", second, ["a.md"])[0].text == "second version\n"
    assert len(list((get_paths().cache_dir / "documents").iterdir())) == 2  # keyed by commit too


def test_unreachable_repositories(tmp_path):
    root = tmp_path / "taxonomy"
    (root / "not-a-repo").mkdir(parents=True)
    sha = "1" * 40
    with pytest.raises(UserError, match="does not exist") as err:
        fetch(root, "nowhere", sha, ["*.md"])
    assert "taxonomy root" in err.value.hint
    with pytest.raises(UserError, match="cannot fetch") as err:
        fetch(root, "not-a-repo", sha, ["*.md"])
    assert "git repository" in err.value.hint
    for url in ["https://127.0.0.1:9/nothing.git", f"file://{tmp_path}/nothing.git"]:
        with pytest.raises(UserError, match="cannot fetch") as err:
            fetch(root, url, sha, ["*.md"])
        assert "network" in err.value.hint


def test_the_cause_from_git_is_shown_not_its_last_line(tmp_path):
    root = tmp_path / "taxonomy"
    (root / "not-a-repo").mkdir(parents=True)
    with pytest.raises(UserError, match="cannot fetch") as err:
        fetch(root, "not-a-repo", "1" * 40, ["*.md"])
    assert "does not appear to be a git repository" in err.value.message
    assert "the repository exists" not in err.value.message


def test_git_stderr_is_reduced_to_its_errors(monkeypatch):
    def proc(stderr: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.CompletedProcess([], 128, b"", stderr.encode())

    told = ("warning: redirecting to https://example.org/x.git/\nfatal: unable to access "
            "'https://me:t0ken@example.org/x.git/': could not resolve host\n\nPlease make sure...\n")
    assert documents._stderr(proc(told)) == (
        "fatal: unable to access 'https://example.org/x.git/': could not resolve host")
    assert documents._stderr(proc("error: one\nfatal: two\nhint: three\n")) == "error: one; fatal: two"
    assert documents._stderr(proc("\nsomething odd\nand more\n")) == "something odd; and more"
    assert documents._stderr(proc("")) == "exit status 128"


def test_repo_strings_cannot_run_commands(tmp_path):
    root = tmp_path / "taxonomy"
    root.mkdir()
    marker = tmp_path / "ran"
    for repo in [f"ext::sh -c touch% {marker}://x", f"--upload-pack=touch {marker};://x",
                 f"--upload-pack=touch {marker}"]:
        with pytest.raises(UserError):
            fetch(root, repo, "1" * 40, ["*.md"])
    assert not marker.exists()


def test_concurrent_fetches_share_one_cache_entry(docs_repo):
    root, sha = docs_repo
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: fetch(root, "docs", sha, ["*.md"]), range(4)))
    assert all(r == results[0] for r in results)
    assert len(list((get_paths().cache_dir / "documents").iterdir())) == 1  # no entry twice, no leftovers


def test_damaged_cache_entry_is_rebuilt(docs_repo):
    root, sha = docs_repo
    first = fetch(root, "docs", sha, ["a.md"])
    [entry] = (get_paths().cache_dir / "documents").iterdir()
    subprocess.run(["rm", "-rf", str(entry / "objects")], check=True)
    assert fetch(root, "docs", sha, ["a.md"]) == first
