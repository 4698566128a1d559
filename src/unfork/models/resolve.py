"""Turning ``--model`` into a loadable model: a catalog name, a file or folder, a name in the store, or a
Hugging Face hub id (``org/name``).

Every command calls :func:`resolve_model`. A name is resolved once, here; then
the model is fetched (:mod:`unfork.models.download`) or converted
(:mod:`unfork.models.convert`) as asked, and those modules never resolve names
themselves, so none of them imports this one. Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from pathlib import Path

from unfork import fsio
from unfork.errors import MissingExtraError, UserError
from unfork.models import catalog, convert, download
from unfork.models.catalog import CatalogEntry
from unfork.models.store import (
    Echo,
    ResolvedModel,
    chat_template_of,
    echo_stderr,
    instructlab_models_dir,
    model_lock,
    resolve_folder,
    resolved_for,
    stored_gguf,
    stored_hf,
)
from unfork.paths import get_paths

FORMATS = (None, "gguf", "hf")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]*[A-Za-z0-9_]")


def is_hub_id(name: str) -> bool:
    """``org/name`` as the hub spells repositories: one slash, no path or GGUF look about it."""
    return bool(_HUB_ID.fullmatch(name)) and ".." not in name and not name.endswith((".gguf", ".safetensors"))


def snapshot_from_hub(repo_id: str, dest: Path) -> None:
    """Fetch a hub repository's model files into ``dest``, as ``unfork model download --source hf`` does."""
    try:
        import huggingface_hub
        from huggingface_hub import errors as hf_errors
    except ImportError:
        raise MissingExtraError("huggingface_hub", "hf", f"Using the hub model {repo_id}") from None
    try:
        huggingface_hub.snapshot_download(repo_id, local_dir=dest, allow_patterns=download.HF_PATTERNS)
    except (hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled, ConnectionError,
            TimeoutError) as exc:
        raise UserError(f"could not fetch {repo_id} from the Hugging Face hub: it cannot be reached from this "
                        f"machine ({type(exc).__name__})",
                        hint="download the model where the hub is reachable and pass its folder") from None
    except hf_errors.HfHubHTTPError as exc:
        raise UserError(f"the Hugging Face hub refused {repo_id}: {str(exc).splitlines()[0]}",
                        hint="check the repository id (org/name)") from None


HubDownloader = Callable[[str, Path], None]
hub_downloader: HubDownloader = snapshot_from_hub  # tests replace it: no network


def hub_folder(repo_id: str) -> Path:
    return get_paths().models_dir / "hub" / repo_id.replace("/", "--")


def from_hub(repo_id: str, *, download_missing: bool = True, echo: Echo = echo_stderr) -> Path:
    """The local folder of hub model ``repo_id``, fetched once into the store."""
    folder = hub_folder(repo_id)
    if (folder / "config.json").is_file():
        return folder
    if not download_missing:
        raise UserError(f"{repo_id} is not downloaded yet", hint=f"run: unfork model download {repo_id}")
    with model_lock(folder.name):
        fsio.sweep_beside(folder)  # a swap that a kill cut short is put back
        if not (folder / "config.json").is_file():
            echo(f"'{repo_id}' is no file, folder or catalog model: fetching it from the Hugging Face hub "
                 f"into {folder} ...")
            # The hub writes into a folder beside the store's, moved into place whole: a kill leaves no half model.
            with fsio.atomic_folder(folder, markers=("config.json",),
                                    partial=download.partial_beside(folder)) as tmp:
                tmp.rmdir()  # the downloader makes its folder itself, as snapshot_download does
                hub_downloader(repo_id, tmp)
                if not (tmp / "config.json").is_file():
                    raise UserError(f"{repo_id} on the hub has no config.json: not a model unfork can load",
                                    hint="pass a catalog name, a GGUF file or a model folder")
    return folder


def find_local(name: str) -> Path | None:
    """A path the user named, or a run/checkpoint folder under unfork's data folder."""
    path = Path(name).expanduser()
    if path.exists():
        return path
    ilab = instructlab_models_dir()
    if not path.is_absolute() and ".." not in path.parts:
        for candidate in (ilab / name, ilab / f"{name}.gguf"):
            if candidate.exists():
                return candidate
    if os.sep in name or "/" in name or name.endswith(".gguf"):
        return None
    paths = get_paths()
    for root in (paths.checkpoints_dir, paths.runs_dir, paths.models_dir):
        candidate = root / name
        if candidate.is_dir():
            return candidate
    exports = sorted(paths.models_dir.glob(f"*/gguf/{name}.gguf")) if paths.models_dir.is_dir() else []
    return exports[0] if exports else None


def lookup(name_or_path: str, *, hub: bool = True, echo: Echo = echo_stderr) -> tuple[CatalogEntry | None, Path | None]:
    """The catalog entry, else the local path, that ``name_or_path`` names; a :class:`UserError` if neither.

    A hub id (``org/name``) that is neither is fetched from the hub, or only looked up when ``hub`` is false.
    """
    if not name_or_path or not name_or_path.strip():
        raise UserError("no model given", hint="pass a catalog name, a .gguf file or a model folder")
    entry = catalog.find_entry(name_or_path)
    local = None if entry else find_local(name_or_path)
    if entry is None and local is None and is_hub_id(name_or_path):
        local = from_hub(name_or_path, download_missing=hub, echo=echo)
    if entry is None and local is None:
        close = catalog.closest_name(name_or_path)
        looks_like_path = "/" in name_or_path or name_or_path.endswith((".gguf", ".safetensors"))
        message = (f"no such file or folder: {name_or_path}" if looks_like_path
                   else f"'{name_or_path}' is not a catalog model, a file or a model folder")
        hint = f"did you mean '{close}'?" if close else "see 'unfork model list --catalog'"
        raise UserError(message, hint=hint)
    return entry, local


def _from_catalog(entry: CatalogEntry, *, download_missing: bool, format: str | None,
                  echo: Echo) -> ResolvedModel:
    gguf = stored_gguf(entry)
    if gguf is not None:
        return resolved_for(entry, gguf, "gguf")
    hf = stored_hf(entry.name)
    if hf is not None and format is None:
        return resolved_for(entry, hf, "hf")
    if not download_missing:
        raise UserError(f"{entry.name} is not downloaded yet", hint=f"run: unfork model download {entry.name}")
    return download.download_model(entry.name, echo=echo)


def _from_path(local: Path, format: str | None) -> ResolvedModel:
    if local.is_file():
        from unfork.models.gguf_meta import is_gguf

        if not is_gguf(local):
            raise UserError(f"{local} is not a GGUF file",
                            hint="pass a .gguf file or a Hugging Face folder (with config.json)")
        return ResolvedModel(local.stem, local, "gguf", chat_template_of(local, "gguf"))
    try:
        return resolve_folder(local, format)
    except UserError:
        if format != "gguf":
            raise
        resolve_folder(local, "hf")  # re-raises when it is no model at all
        raise UserError(f"{local} is a Hugging Face folder; a GGUF file is needed here",
                        hint=f"convert it: unfork model convert {local} --to gguf") from None


def _resolve_as_is(name_or_path: str, *, download: bool, format: str | None, echo: Echo) -> ResolvedModel:
    """The model ``name_or_path`` names, in the format asked (``None`` or ``"gguf"``), never converted."""
    entry, local = lookup(name_or_path, hub=download, echo=echo)
    if entry is not None:
        return _from_catalog(entry, download_missing=download, format=format, echo=echo)
    assert local is not None
    return _from_path(local, format)


def resolve_model(name_or_path: str, *, download: bool = True, format: str | None = None,
                  echo: Echo = echo_stderr) -> ResolvedModel:
    """Turn ``--model`` into a loadable model.

    Accepts a catalog name (downloaded if missing and ``download`` is true), a
    GGUF file, a Hugging Face folder, a trained run folder, or a folder in the
    store. ``format`` asks for ``"gguf"`` or ``"hf"``: ``"hf"`` converts a
    GGUF once and caches the folder (see :func:`ensure_hf`).
    """
    if format not in FORMATS:
        raise UserError(f"unknown model format '{format}'", hint="one of: gguf, hf")
    if format == "hf":
        lookup(name_or_path, hub=download, echo=echo)  # an unknown name fails before any lock is taken
        return ensure_hf(name_or_path, download=download, echo=echo)
    return _resolve_as_is(name_or_path, download=download, format=format, echo=echo)


def _hf_lock(name_or_path: str, entry: CatalogEntry | None) -> contextlib.AbstractContextManager[None]:
    """Two processes must not convert into the same folder at once."""
    return model_lock(f"{entry.name if entry else Path(name_or_path).name}-hf")


def _hf_of(name_or_path: str, entry: CatalogEntry | None, src: ResolvedModel | None, *, download: bool,
           dtype: str, force: bool, echo: Echo) -> ResolvedModel:
    """``src`` (resolved here when not given) as a Hugging Face folder; call it holding :func:`_hf_lock`."""
    if entry is not None and not force:
        cached = convert.cached_hf(entry)
        if cached is not None:
            return cached
    if src is None:
        # forcing a catalog model reconverts its GGUF even when a Hugging Face folder is stored
        fmt = "gguf" if entry is not None and force else None
        src = _resolve_as_is(name_or_path, download=download, format=fmt, echo=echo)
    if src.format == "hf":
        return src
    return convert.hf_from_gguf(src, entry, dtype=dtype, force=force, echo=echo)


def ensure_hf(name_or_path: str, *, download: bool = True, dtype: str = "bfloat16", force: bool = False,
              echo: Echo = echo_stderr) -> ResolvedModel:
    """A Hugging Face folder for ``name_or_path``, converting a GGUF once and caching it.

    Catalog models land in ``<models dir>/<name>-hf/``; other GGUF files in
    ``<models dir>/<file stem>-hf/``. A cached folder is reused while its
    manifest's ``source_sha256`` matches the GGUF.
    """
    entry = catalog.find_entry(name_or_path)
    cached = convert.cached_hf(entry) if entry is not None and not force else None
    if cached is not None:  # reading needs no lock; converting does
        return cached
    with _hf_lock(name_or_path, entry):
        return _hf_of(name_or_path, entry, None, download=download, dtype=dtype, force=force, echo=echo)


def export_gguf(name_or_path: str, *, outtype: str = "f16", output: Path | None = None, force: bool = False,
                echo: Echo = echo_stderr) -> ResolvedModel:
    """A GGUF file for a Hugging Face model, converting a GGUF source to a folder first.

    See :func:`unfork.models.convert.gguf_from_hf` for the default type and output.
    """
    src = _resolve_as_is(name_or_path, download=True, format=None, echo=echo)
    if src.format == "gguf":
        entry = catalog.find_entry(name_or_path)
        with _hf_lock(name_or_path, entry):
            src = _hf_of(name_or_path, entry, src, download=True, dtype="bfloat16", force=False, echo=echo)
    return convert.gguf_from_hf(src, outtype=outtype, output=output, force=force, echo=echo)
