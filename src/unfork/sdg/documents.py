"""Knowledge documents: fetch them from git, read them as text, cut them into chunks.

A knowledge leaf names its documents as ``document: {repo, commit, patterns}``.
``fetch_documents`` fetches ``commit`` of ``repo`` once into a cache keyed by
repository and commit, matches ``patterns`` against the files of that commit and
returns their text. ``chunk_text`` cuts a text into pieces that each fit a token
budget, so that every prompt built from a chunk fits the teacher's context.

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
folders. Markdown and text files are read as UTF-8; PDFs are converted with
``pypdf`` (extra ``pdf``).
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath

from unfork.errors import MissingExtraError, UserError
from unfork.paths import get_paths
from unfork.taxonomy.examples import is_local_repo, resolve_document_repo

TEXT_SUFFIXES = (".md", ".markdown", ".txt")
PDF_SUFFIXES = (".pdf",)
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
GIT_TIMEOUT_S = 900

_SHA = re.compile(r"[0-9a-fA-F]{4,64}")
_FULL_SHA_LENGTHS = (40, 64)
_LFS_POINTER = b"version https://git-lfs.github.com/spec/"
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


@dataclass
class Document:
    source: str  # path inside the repository, e.g. "docs/marrowvey.md"
    text: str  # plain text or Markdown


@dataclass
class Chunk:
    doc: str  # Document.source it was cut from
    index: int  # position among that document's chunks, from 0
    text: str
    tokens: int  # count_tokens(text)


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
    lines = [ln for ln in proc.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1].strip() if lines else f"exit status {proc.returncode}"


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


# ------------------------------------------------------------------------ conversion


def _to_text(source: str, target: str, data: bytes) -> str:
    if len(data) < 1024 and data.startswith(_LFS_POINTER):
        raise UserError(f"{source} is a Git LFS pointer, not the document itself",
                        hint="unfork does not download LFS objects: commit the document without LFS")
    suffix = PurePosixPath(target).suffix.lower()
    if suffix in TEXT_SUFFIXES:
        text = _decode(source, data)
    elif suffix in PDF_SUFFIXES:
        text = _pdf_text(source, data)
    else:
        raise UserError(f"{source} is not a supported document type ({suffix or 'no extension'})",
                        hint="knowledge documents must be Markdown (.md), plain text (.txt) or PDF")
    if not text.strip():
        raise UserError(f"the document {source} is empty",
                        hint="a knowledge document needs text to learn from")
    return text


def _decode(source: str, data: bytes) -> str:
    if b"\0" in data:
        raise UserError(f"{source} is a binary file, not text",
                        hint="a .md or .txt document must be UTF-8 text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(f"{source} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start})",
                        hint="save the document as UTF-8") from err
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _pdf_text(source: str, data: bytes) -> str:
    try:
        import pypdf
    except ImportError:
        raise MissingExtraError("pypdf", "pdf", "Reading PDF knowledge documents") from None
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            reader.decrypt("")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
    except Exception as err:  # pypdf raises many types on a damaged or hostile file
        raise UserError(f"cannot read the PDF {source}: {err}",
                        hint="check that the file opens in a PDF viewer, or convert it to Markdown") from err
    text = "\n\n".join(p for p in pages if p)
    if not text:
        raise UserError(f"the PDF {source} has no text layer (a scan?)",
                        hint="unfork does not run OCR: convert the document to Markdown")
    return text


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
            documents.append(Document(source, _to_text(source, target, _blob(bare, entry.oid, home))))
    return documents


# --------------------------------------------------------------------------- chunking


def estimate_tokens(text: str) -> int:
    """A conservative token count without a tokenizer: one token per 3 bytes of UTF-8.

    English runs near 4 characters per token, so this over-counts it by about a
    third; CJK text (3 bytes a character) comes out near one token a character.
    Pass the teacher's tokenizer as ``count_tokens`` for an exact budget.
    """
    return math.ceil(len(text.encode("utf-8")) / 3)


@dataclass(frozen=True)
class ChunkSpan:
    """Where a chunk comes from in its document.

    The chunk's text is ``heading`` (the headings above it, when that fits),
    a blank line, then ``text[start:end].strip()``. ``text[start:body_start]`` is
    the overlap repeated from the previous chunk; the ``[body_start, end)``
    ranges of consecutive chunks tile the whole document.
    """

    start: int
    body_start: int
    end: int
    heading: str
    tokens: int


_ATX_HEADING = re.compile(r" {0,3}(#{1,6})(?:[ \t]|$)")
_FENCE = re.compile(r" {0,3}(```|~~~)")
_SENTENCE_END = re.compile(r"""[.!?\u2026\u3002\uff01\uff1f][)\]"'\u201d\u2019\u00bb]*\s+""")
_WORD_START = re.compile(r"(?<=\s)\S")
_NEWLINE = re.compile(r"\n")
_NON_SPACE = re.compile(r"\S")


@dataclass(frozen=True)
class _Heading:
    start: int
    end: int  # end of its line, newline included
    level: int
    line: str


def _blocks(text: str) -> tuple[list[int], list[_Heading]]:
    """Cut positions between Markdown blocks (paragraphs, headings) and the headings."""
    cuts, headings = [], []
    pos, in_fence, after_blank = 0, False, False
    for line in text.splitlines(keepends=True):
        fence = _FENCE.match(line)
        blank = not line.strip()
        heading = None if in_fence else _ATX_HEADING.match(line)
        if not in_fence and (heading or (after_blank and not blank)):
            cuts.append(pos)
        if heading:
            headings.append(_Heading(pos, pos + len(line), len(heading.group(1)), line.strip()))
            cuts.append(pos + len(line))
        if fence:
            in_fence = not in_fence
        after_blank = blank
        pos += len(line)
    return cuts, headings


def _spans(cuts: list[int], start: int, end: int) -> list[tuple[int, int]]:
    points = [start, *sorted({c for c in cuts if start < c < end}), end]
    return list(zip(points, points[1:], strict=False))


def _pieces(text: str, block_cuts: list[int], count: Callable[[str], int],
            budget: int) -> list[tuple[int, int]]:
    """Cut ``text`` into spans that tile it and each fit ``budget``, coarsest first."""
    out: list[tuple[int, int]] = []

    def fits(a: int, b: int) -> bool:
        return count(text[a:b].strip()) <= budget

    def split(a: int, b: int, level: int) -> None:
        if fits(a, b):
            out.append((a, b))
            return
        if level == 0:  # sentences and lines
            cuts = [m.end() for m in _SENTENCE_END.finditer(text, a, b)]
            cuts += [m.end() for m in _NEWLINE.finditer(text, a, b)]
        elif level == 1:  # words
            cuts = [m.start() for m in _WORD_START.finditer(text, a, b)]
        else:  # characters: only a single word longer than the budget gets here
            while a < b:
                if not fits(a, a + 1):
                    raise ValueError(f"max_tokens={budget} cannot hold even one character")
                lo, hi = a + 1, b
                while lo < hi:
                    mid = (lo + hi + 1) // 2
                    if fits(a, mid):
                        lo = mid
                    else:
                        hi = mid - 1
                out.append((a, lo))
                a = lo
            return
        for sa, sb in _spans(cuts, a, b):
            split(sa, sb, level + 1)

    for a, b in _spans(block_cuts, 0, len(text)):
        split(a, b, 0)
    # Whitespace alone is no piece: glue it to the next (or, at the end, the previous) one.
    merged: list[tuple[int, int]] = []
    carry = None
    for a, b in out:
        if carry is not None:
            a, carry = carry, None
        if not text[a:b].strip():
            carry = a
            continue
        merged.append((a, b))
    if carry is not None and merged:
        merged[-1] = (merged[-1][0], len(text))
    return merged


class _Outline:
    """The headings of a text, each with its parent, to find the path above any position fast."""

    def __init__(self, text: str, headings: list[_Heading]):
        self.text, self.headings = text, headings
        self.starts = [h.start for h in headings]
        self.parent: list[int | None] = []
        stack: list[int] = []
        for k, h in enumerate(headings):
            while stack and headings[stack[-1]].level >= h.level:
                stack.pop()
            self.parent.append(stack[-1] if stack else None)
            stack.append(k)

    def path(self, pos: int) -> str:
        """The headings above ``pos``, outermost first. A heading that is the chunk's own first
        line is left out, and so are the sections it closes (``### B`` drops ``### A``)."""
        found = _NON_SPACE.search(self.text, pos)
        first = found.start() if found else len(self.text)
        k = bisect.bisect_right(self.starts, first) - 1
        if k < 0:
            return ""
        chain: list[int] = []
        node = self.parent[k] if self.headings[k].end > first else k
        while node is not None:
            chain.append(node)
            node = self.parent[node]
        return "\n".join(self.headings[n].line for n in reversed(chain))


def chunk_spans(text: str, *, max_tokens: int, overlap_tokens: int = 32,
                count_tokens: Callable[[str], int] | None = None) -> list[ChunkSpan]:
    """Plan the chunks of ``text``: see ``chunk_text``, which cuts along these spans."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, not {max_tokens}")
    if overlap_tokens < 0:
        raise ValueError(f"overlap_tokens must be at least 0, not {overlap_tokens}")
    overlap_tokens = min(overlap_tokens, max_tokens // 2)  # the default 32 with a small budget
    count = count_tokens or estimate_tokens
    block_cuts, headings = _blocks(text)
    pieces = _pieces(text, block_cuts, count, max_tokens)
    outline = _Outline(text, headings)
    heading_starts = set(outline.starts)
    is_heading = [(m := _NON_SPACE.search(text, a)) is not None and m.start() in heading_starts
                  for a, _ in pieces]
    sentence_starts = {0, *block_cuts, *(m.end() for m in _SENTENCE_END.finditer(text))}

    def render(prefix: str, start: int, end: int) -> str:
        body = text[start:end].strip()
        return f"{prefix}\n\n{body}" if prefix else body

    def pack(i: int, prefix: str, start: int) -> tuple[int, int] | None:
        """(end piece, tokens) of the longest chunk from piece ``i`` after ``prefix``; None if none fits."""
        def measure(j: int) -> int:  # tokens of the chunk holding pieces i..j-1
            return count(render(prefix, start, pieces[j - 1][1]))

        tokens = measure(i + 1)
        if tokens > max_tokens:
            return None
        # Gallop, then bisect: O(log n) counts per chunk, which matters with a real tokenizer.
        # The chunk kept is always one that was measured to fit.
        j, step, too_far = i + 1, 1, None
        while j < len(pieces):
            probe = min(j + step, len(pieces))
            more = measure(probe)
            if more > max_tokens:
                too_far = probe
                break
            tokens, j, step = more, probe, step * 2
        while too_far is not None and too_far - j > 1:
            mid = (j + too_far) // 2
            more = measure(mid)
            if more > max_tokens:
                too_far = mid
            else:
                tokens, j = more, mid
        if j < len(pieces) and is_heading[j - 1] and j - 1 > i:
            while j - 1 > i and is_heading[j - 1]:
                j -= 1  # headings open the next chunk rather than close this one
            tokens = count(render(prefix, start, pieces[j - 1][1]))
        return j, tokens

    spans: list[ChunkSpan] = []
    i = 0
    while i < len(pieces):
        body_start = pieces[i][0]
        overlap = body_start
        if spans and overlap_tokens:
            # the longest run of whole words that fits, from a sentence start if one does
            prev, sentence = spans[-1].body_start, None
            for m in reversed(list(re.finditer(r"\S+", text[prev:body_start]))):
                if count(text[prev + m.start():body_start].strip()) > overlap_tokens:
                    break
                overlap = prev + m.start()
                if overlap in sentence_starts:
                    sentence = overlap
            overlap = sentence if sentence is not None else overlap
        options = []
        for start in dict.fromkeys((overlap, body_start)):
            heading = outline.path(start)
            if heading and count(heading) <= max_tokens // 4:
                options.append((heading, start))
            options.append(("", start))
        # The first option whose chunk holds more than headings; the bare piece always fits.
        chosen = None
        for prefix, start in options:
            packed = pack(i, prefix, start)
            if packed is None:
                continue
            chosen = chosen or (prefix, start, *packed)
            if packed[0] == len(pieces) or not all(is_heading[i:packed[0]]):
                chosen = (prefix, start, *packed)
                break
        assert chosen is not None  # pieces fit max_tokens on their own
        prefix, start, j, tokens = chosen
        spans.append(ChunkSpan(start, body_start, pieces[j - 1][1], prefix, tokens))
        i = j
    return spans


def chunk_text(text: str, *, max_tokens: int, overlap_tokens: int = 32,
               count_tokens: Callable[[str], int] | None = None, doc: str = "") -> list[Chunk]:
    """Cut ``text`` into chunks of at most ``max_tokens`` tokens each.

    Cuts follow Markdown structure first (headings, blank-line paragraphs; none
    at a blank line inside a code fence), then sentences and lines, then words;
    a single word longer than the budget is the only thing ever cut mid-word.
    Pieces are packed
    greedily; each chunk after the first repeats up to ``overlap_tokens`` tokens
    (whole words, at most half the budget) of the one before, and starts with the path of headings above
    it when that fits in a quarter of the budget. ``count_tokens`` defaults to
    ``estimate_tokens``; every chunk's ``tokens`` is ``count_tokens(chunk.text)``
    and never exceeds ``max_tokens``. Same input, same chunks.
    """
    count = count_tokens or estimate_tokens
    chunks = []
    for index, span in enumerate(chunk_spans(text, max_tokens=max_tokens, overlap_tokens=overlap_tokens,
                                             count_tokens=count)):
        body = text[span.start:span.end].strip()
        chunk = f"{span.heading}\n\n{body}" if span.heading else body
        chunks.append(Chunk(doc, index, chunk, span.tokens))
    return chunks


def chunk_documents(docs: list[Document], *, max_tokens: int, overlap_tokens: int = 32,
                    count_tokens: Callable[[str], int] | None = None) -> list[Chunk]:
    """``chunk_text`` over each document in turn; ``Chunk.index`` counts within a document."""
    return [chunk for doc in docs for chunk in chunk_text(doc.text, max_tokens=max_tokens,
                                                           overlap_tokens=overlap_tokens,
                                                           count_tokens=count_tokens, doc=doc.source)]
