"""Fetch a knowledge leaf's documents from git, safely, once per repository and commit.

A knowledge leaf names its documents as ``document: {repo, commit, patterns}``.
``fetch_documents`` fetches ``commit`` of ``repo`` once into a cache keyed by
repository and commit, matches ``patterns`` against the files of that commit and
returns them as ``Document``s, read by :mod:`unfork.documents.convert`.

How the repository is read, and why it is safe with a hostile one
-----------------------------------------------------------------
The commit is fetched into a bare repository (``git init --bare`` then
``git fetch --depth=1 <repo> <commit>``) and files are read straight from git's
object store (``ls-tree`` and ``cat-file``). Nothing is ever checked out, so:

* no ``.gitattributes`` filter (smudge/process), ``ident`` or encoding
  conversion runs, whatever the repository or the user's configuration says;
  Git LFS never runs either (an LFS pointer is reported as such);
* submodules are never fetched (a submodule is only a commit id in the tree);
* symbolic links are never created on disk: a link is a blob holding its target,
  resolved here against the commit's own tree, so no pattern or link can reach a
  file outside the repository (a target that is absolute or climbs above the
  root is refused, as are patterns with ``..`` or a leading ``/``);
* no hook can run: the bare repository is made with an empty template and
  ``core.hooksPath`` points at ``/dev/null``; hooks are never transferred anyway.

Every git command runs with the system and global configuration ignored
(``GIT_CONFIG_NOSYSTEM``, ``GIT_CONFIG_GLOBAL=/dev/null``, an empty ``HOME``),
all inherited ``GIT_*`` variables dropped except the few that choose how to
reach a server (``GIT_SSH_COMMAND``, CA certificates), no terminal prompt, and
only the file, git, ssh, http and https transports allowed (``ext::`` and other
transports that run commands are refused). A repository argument is passed
after ``--`` so it can never be read as an option.

Patterns follow InstructLab: globs relative to the repository root
(``*.md``, ``folder/*.md``, ``folder/doc.md``); ``*`` stays inside one folder
and does not match names starting with a dot, ``**`` matches any number of
folders.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from unfork.documents.convert import PDF_SUFFIXES, TEXT_SUFFIXES, Document, document_from_bytes
from unfork.errors import UserError
from unfork.paths import get_paths
from unfork.taxonomy.examples import is_local_repo, resolve_document_repo

MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
GIT_TIMEOUT_S = 900

_SHA = re.compile(r"[0-9a-fA-F]{4,64}")
_CREDENTIALS = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s'\"]*@")  # the user:token@ of a URL
_FULL_SHA_LENGTHS = (40, 64)
_MODE_LINK = "120000"
_MODE_SUBMODULE = "160000"
_MAX_LINK_HOPS = 40
_MARKER = "unfork-source.json"

# Passed as ``git -c`` to every command. Nothing is checked out, so most of
# these guard against a future change rather than today's code: hooks off, LFS
# off, submodules off, background maintenance off, and only transports that
# cannot run a command of the repository's choosing.
_GIT_CONFIG = (
    f"core.hooksPath={os.devnull}",
    "core.fsmonitor=false",
    "core.sshCommand=ssh -o BatchMode=yes",
    "protocol.allow=never",
    "protocol.file.allow=always",
    "protocol.git.allow=always",
    "protocol.ssh.allow=always",
    "protocol.http.allow=always",
    "protocol.https.allow=always",
    "filter.lfs.smudge=",
    "filter.lfs.process=",
    "filter.lfs.required=false",
    "submodule.recurse=false",
    "fetch.recurseSubmodules=false",
    "http.lowSpeedLimit=1000",  # give up on a transfer stalled below 1 kB/s for a minute
    "http.lowSpeedTime=60",
    "gc.auto=0",
    "maintenance.auto=false",
)
# Inherited GIT_* variables that only say how to reach a server.
_KEEP_GIT_ENV = frozenset({"GIT_SSH", "GIT_SSH_COMMAND", "GIT_SSH_VARIANT", "GIT_SSL_CAINFO",
                           "GIT_SSL_CAPATH", "GIT_PROXY_SSL_CAINFO"})

# --------------------------------------------------------------------------- git


def _git_env(home: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") or k in _KEEP_GIT_ENV}
    env.update(HOME=home, XDG_CONFIG_HOME=home, GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull,
               GIT_TERMINAL_PROMPT="0", GIT_LFS_SKIP_SMUDGE="1", GIT_OPTIONAL_LOCKS="0")
    return env


def _git(args: list[str], *, home: str, cwd: Path | None = None,
         timeout: float = GIT_TIMEOUT_S) -> subprocess.CompletedProcess[bytes]:
    """Run one isolated git command; the caller checks ``returncode``."""
    cmd = ["git"]
    for setting in _GIT_CONFIG:
        cmd += ["-c", setting]
    try:
        return subprocess.run([*cmd, *args], cwd=cwd, env=_git_env(home), stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        raise UserError(f"git {args[0]} did not finish in {timeout:.0f} s",
                        hint="check your network connection and the repository URL") from err


def _stderr(proc: subprocess.CompletedProcess[bytes]) -> str:
    """git's ``fatal:`` and ``error:`` lines (else its first lines): the cause, not the advice git ends with."""
    lines = [ln.strip() for ln in proc.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("fatal:", "error:"))]
    told = errors or [ln for ln in lines if not ln.startswith(("hint:", "warning:"))] or lines
    return "; ".join(_CREDENTIALS.sub(r"\1", ln) for ln in told[:3]) or f"exit status {proc.returncode}"


def _display(url: str) -> str:
    """``url`` without a password or token in it, for messages and the cache's record."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@", r"\1", url)


def _cache_name(url: str, commit: str) -> str:
    tail = url.rstrip("/").replace(":", "/").rsplit("/", 1)[-1].removesuffix(".git")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", tail).strip(".-")[:40] or "repo"
    digest = hashlib.sha256(f"{url}\0{commit}".encode()).hexdigest()[:16]
    return f"{slug}-{digest}"


def _cached_sha(path: Path, home: str) -> str | None:
    """The commit a finished cache entry holds, or None when it is absent or damaged."""
    try:
        sha = json.loads((path / _MARKER).read_text(encoding="utf-8"))["sha"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    proc = _git(["rev-parse", "--verify", "--quiet", f"{sha}^{{commit}}"], home=home, cwd=path)
    return sha if proc.returncode == 0 and proc.stdout.decode().strip() == sha else None


def _fetch(url: str, commit: str, local: bool, cache_root: Path, home: str) -> tuple[Path, str]:
    """Fetch ``commit`` of ``url`` into the cache (once); return the bare repository and full SHA."""
    entry = cache_root / _cache_name(url, commit)
    sha = _cached_sha(entry, home)
    if sha:
        return entry, sha
    if local and not Path(url).exists():
        raise UserError(f"the document repository {url} does not exist",
                        hint="document.repo is a URL, or a path relative to the taxonomy root (the "
                             "folder holding knowledge/)")
    cache_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=cache_root))
    try:
        if entry.exists() and _cached_sha(entry, home) is None:  # damaged: move it aside, then rebuild
            with contextlib.suppress(OSError):
                entry.rename(work / "old")
        repo = work / "repo.git"
        proc = _git(["init", "--bare", "--quiet", "--template=", str(repo)], home=home)
        if proc.returncode != 0:
            raise UserError(f"cannot create a git repository in {cache_root}: {_stderr(proc)}")
        fetched = False
        if len(commit) in _FULL_SHA_LENGTHS:  # the commit alone, without history
            proc = _git(["fetch", "--quiet", "--depth=1", "--no-tags", "--no-recurse-submodules",
                         "--", url, commit], home=home, cwd=repo)
            fetched = proc.returncode == 0
        if not fetched:  # an abbreviated SHA, or a server that refuses to send a commit by id
            proc = _git(["fetch", "--quiet", "--no-tags", "--no-recurse-submodules", "--", url,
                         "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"], home=home, cwd=repo)
            if proc.returncode != 0:
                raise _unreachable(url, local, _stderr(proc))
        proc = _git(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{commit}^{{commit}}"],
                    home=home, cwd=repo)
        sha = proc.stdout.decode().strip()
        if proc.returncode != 0 or not sha:
            raise UserError(f"commit {commit} is not in the document repository {_display(url)}",
                            hint="push that commit to the repository, or fix document.commit: it must be "
                                 "the SHA of a commit there (git rev-parse HEAD prints yours)")
        proc = _git(["update-ref", "refs/unfork/document", sha], home=home, cwd=repo)
        if proc.returncode != 0:
            raise UserError(f"cannot record commit {sha} in {repo}: {_stderr(proc)}")
        record = {"url": _display(url), "commit": commit, "sha": sha}
        (repo / _MARKER).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        try:
            repo.rename(entry)  # atomic: a reader sees nothing or a finished entry
        except OSError:
            if _cached_sha(entry, home) != sha:  # not a concurrent fetch that finished first
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return entry, sha


def _unreachable(url: str, local: bool, detail: str) -> UserError:
    if local:
        hint = ("document.repo must be a git repository; a relative path is resolved against the "
                "taxonomy root (the folder holding knowledge/)")
    else:
        hint = "check the URL, your network connection and that you may read the repository"
    return UserError(f"cannot fetch the document repository {_display(url)}: {detail}", hint=hint)


# ----------------------------------------------------------------- tree and patterns


@dataclass(frozen=True)
class _Entry:
    mode: str
    oid: str
    size: int | None  # None for a submodule


def _list_tree(repo: Path, sha: str, home: str) -> dict[str, _Entry]:
    proc = _git(["ls-tree", "-r", "-l", "-z", "--full-tree", sha], home=home, cwd=repo)
    if proc.returncode != 0:
        raise UserError(f"cannot list the files of commit {sha}: {_stderr(proc)}")
    entries: dict[str, _Entry] = {}
    for record in proc.stdout.split(b"\0"):
        if not record:
            continue
        meta, raw_path = record.split(b"\t", 1)
        mode, _kind, oid, size = meta.decode().split()
        path = raw_path.decode("utf-8", "surrogateescape")
        if any(part in ("", ".", "..", ".git") for part in path.split("/")):
            continue  # git refuses to check such a path out; never read one either
        entries[path] = _Entry(mode, oid, None if size == "-" else int(size))
    return entries


def _blob(repo: Path, oid: str, home: str) -> bytes:
    proc = _git(["cat-file", "blob", oid], home=home, cwd=repo)
    if proc.returncode != 0:
        raise UserError(f"cannot read git object {oid}: {_stderr(proc)}")
    return proc.stdout


def _pattern_parts(pattern: str) -> list[str]:
    """A pattern's folder parts; refuses any that could leave the repository."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise UserError("document.patterns holds an empty pattern", hint="write a glob such as '*.md'")
    if pattern.startswith(("/", "\\", "~")) or re.match(r"[A-Za-z]:([\\/]|$)", pattern):
        raise UserError(f"document pattern {pattern!r} is absolute",
                        hint="patterns are relative to the repository root, e.g. 'docs/*.md'")
    parts = [p for p in pattern.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UserError(f"document pattern {pattern!r} goes up with '..'",
                        hint="patterns can only name files inside the document repository")
    if not parts:
        raise UserError(f"document pattern {pattern!r} names no file", hint="write a glob such as '*.md'")
    return parts


def _part_matches(pattern: str, name: str) -> bool:
    if name.startswith(".") and not pattern.startswith("."):
        return False  # like glob: '*' does not match hidden names
    return fnmatchcase(name, pattern)


def _matches(pattern: list[str], parts: list[str]) -> bool:
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        for i in range(len(parts) + 1):
            if _matches(rest, parts[i:]):
                return True
            if i < len(parts) and parts[i].startswith("."):
                return False  # '**' does not go into hidden folders
        return False
    return bool(parts) and _part_matches(head, parts[0]) and _matches(rest, parts[1:])


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _resolve_link(path: str, entries: dict[str, _Entry], repo: Path, home: str) -> str:
    """Follow the symbolic links in ``path`` inside the commit's tree; refuse any way out."""
    queue = path.split("/")
    resolved: list[str] = []
    hops = 0
    while queue:
        part = queue.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                raise UserError(f"{path} is a symbolic link that points outside the document repository",
                                hint="unfork reads only files inside the repository; commit the file itself")
            resolved.pop()
            continue
        resolved.append(part)
        entry = entries.get("/".join(resolved))
        if entry is not None and entry.mode == _MODE_LINK:
            hops += 1
            if hops > _MAX_LINK_HOPS:
                raise UserError(f"{path}: too many levels of symbolic links")
            target = _blob(repo, entry.oid, home).decode("utf-8", "surrogateescape")
            if target.startswith("/") or re.match(r"[A-Za-z]:[\\/]", target):
                raise UserError(f"{path} is a symbolic link to {target}, outside the document repository",
                                hint="unfork reads only files inside the repository; commit the file itself")
            resolved.pop()
            queue = target.split("/") + queue
    return "/".join(resolved)


def _select(patterns: list[str], entries: dict[str, _Entry], repo: Path, home: str,
            where: str) -> list[tuple[str, str]]:
    """(source, resolved path) of every readable file the patterns match, in pattern order."""
    chosen: dict[str, str] = {}
    for pattern in patterns:
        parts = _pattern_parts(pattern)
        hits = sorted(p for p in entries if _matches(parts, p.split("/")))
        if not hits:
            raise _no_match(pattern, parts, entries, where)
        readable, skipped = [], []
        for source in hits:
            target = source
            if entries[source].mode == _MODE_LINK:
                target = _resolve_link(source, entries, repo, home)
            entry = entries.get(target)
            if entries[source].mode == _MODE_SUBMODULE:
                skipped.append(f"{source} (a git submodule: unfork does not fetch submodules; point "
                               "document.repo at that repository instead)")
            elif entry is None:
                skipped.append(f"{source} (a symbolic link to {target}, which is not a file in the "
                               "repository)")
            elif not target.lower().endswith(TEXT_SUFFIXES + PDF_SUFFIXES):
                skipped.append(f"{source} (not a supported type: Markdown, .txt or PDF)")
            else:
                readable.append((source, target))
        if not readable or (skipped and not _is_glob(pattern)):
            raise UserError(f"document pattern {pattern!r} matches no file unfork can read: "
                            + "; ".join(skipped),
                            hint="knowledge documents must be Markdown (.md), plain text (.txt) or PDF")
        for source, target in readable:
            chosen.setdefault(source, target)
    return list(chosen.items())


def _no_match(pattern: str, parts: list[str], entries: dict[str, _Entry], where: str) -> UserError:
    for path, entry in entries.items():
        sub = path.split("/")
        if entry.mode == _MODE_SUBMODULE and len(parts) > len(sub) and all(
                _part_matches(p, s) for p, s in zip(parts, sub, strict=False)):
            return UserError(f"document pattern {pattern!r} points into {path}, a git submodule of {where}",
                             hint="unfork does not fetch submodules: point document.repo at that repository")
    prefix = "/".join(parts) + "/"
    if not _is_glob(pattern) and any(path.startswith(prefix) for path in entries):
        return UserError(f"document pattern {pattern!r} names a folder of {where}, not a file",
                         hint=f"match the files in it, e.g. '{prefix}*.md'")
    files = sorted(entries)
    listing = ", ".join(files[:30]) + (f" and {len(files) - 30} more" if len(files) > 30 else "")
    return UserError(f"document pattern {pattern!r} matches no file in {where}",
                     hint=f"the files there are: {listing}" if files else "that commit holds no files")


# ------------------------------------------------------------------------------ fetch


def _check_commit(commit: str) -> str:
    commit = str(commit).strip()
    if not _SHA.fullmatch(commit):
        raise UserError(f"document.commit {commit!r} is not a commit SHA",
                        hint="pin the exact commit (git rev-parse HEAD prints it): a branch or tag can move")
    return commit.lower()


def fetch_documents(repo: str, commit: str, patterns: list[str], *, taxonomy_root: Path,
                    cache_dir: Path | None = None) -> list[Document]:
    """The documents of a knowledge leaf: ``patterns`` in ``commit`` of ``repo``.

    ``repo`` is a URL or a path (relative to ``taxonomy_root``). The commit is
    fetched once into ``cache_dir`` (default: the unfork cache's
    ``documents/``) and reused afterwards, offline. Raises ``UserError`` for an
    unreachable repository, a missing commit, a pattern matching nothing, a link
    or pattern leaving the repository and a file that is not readable text.
    """
    if not patterns:
        raise UserError("document.patterns is empty", hint="list the documents to read, e.g. '*.md'")
    for pattern in patterns:
        _pattern_parts(pattern)  # refuse a bad pattern before going to the network
    commit = _check_commit(commit)
    if shutil.which("git") is None:
        raise UserError("git is not installed or not on PATH",
                        hint="install git: knowledge documents are read from git repositories")
    local = is_local_repo(repo)
    url = resolve_document_repo(repo, Path(taxonomy_root))
    cache_root = Path(cache_dir) if cache_dir is not None else get_paths().cache_dir / "documents"
    with tempfile.TemporaryDirectory(prefix="unfork-git-home-") as home:
        bare, sha = _fetch(url, commit, local, cache_root, home)
        entries = _list_tree(bare, sha, home)
        documents = []
        for source, target in _select(list(patterns), entries, bare, home, f"{_display(url)} at {sha[:12]}"):
            entry = entries[target]
            if entry.size is not None and entry.size > MAX_DOCUMENT_BYTES:
                raise UserError(f"{source} is {entry.size / 2**20:.0f} MiB, over the "
                                f"{MAX_DOCUMENT_BYTES // 2**20} MiB limit for a knowledge document",
                                hint="split it into smaller documents")
            documents.append(document_from_bytes(source, _blob(bare, entry.oid, home), target=target))
    return documents
