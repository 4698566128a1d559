"""Files and folders that never lose a user's data: atomic writes, unique run folders, one writer per folder."""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
import shutil
import stat
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from unfork.errors import UserError

LOCK_NAME = ".unfork.lock"
"""The lock file :func:`folder_lock` keeps inside a folder while a run writes into it."""

_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_TEMP = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{12}\.(?P<kind>tmp|partial|old)")


class FolderLocked(UserError):
    pass


class NotAFile(UserError):
    pass


class DiskFull(UserError, OSError):
    """Still an ``OSError``, so code that handles a failed write keeps handling it."""


class NotOurs(UserError):
    pass


def _disk_full(path: Path, exc: OSError) -> DiskFull:
    return DiskFull(f"cannot write {path}: {os.strerror(exc.errno or errno.ENOSPC)}",
                    hint="free some space and run the command again; what was there before is unchanged")


def _temp_beside(path: Path, suffix: str = ".tmp") -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{suffix}")


def _write(f: Any, data: bytes) -> None:
    """The one place fsio hands bytes to the operating system, so a test can fill the disk here."""
    f.write(data)


def _sync_file(path: Path) -> None:
    """Flush a file (maybe written by another library) to disk before it is renamed into place."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader, or a crash, sees the old file or the new one, never half of one."""
    atomic_write_chunks(path, [data])


def atomic_write_chunks(path: Path, chunks: Iterable[bytes]) -> None:
    """:func:`atomic_write_bytes` for data that streams; an exception from ``chunks`` leaves ``path`` as it was."""
    with _replacing(Path(path)) as tmp:
        # os.open with 0o666 lets the umask decide the mode, as a plain write would.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            for data in chunks:
                _write(f, data)
            f.flush()
            os.fsync(f.fileno())


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed over it if the block succeeds and removed if not."""
    tmp = _temp_beside(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in _FULL:
            raise _disk_full(path, exc) from None
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str, encoding: str = "utf-8") -> None:
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: Path, data: Any, *, indent: int | None = 2, ensure_ascii: bool = True,
                      newline: bool = True, **dumps: Any) -> None:
    import json

    atomic_write_text(path, json.dumps(data, indent=indent, ensure_ascii=ensure_ascii, **dumps)
                      + ("\n" if newline else ""))


def atomic_write_lines(path: Path, lines: list[str]) -> None:
    """Write a JSONL (or any line) file atomically: each item gets its newline."""
    atomic_write_text(path, "".join(line + "\n" for line in lines))


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for a library that writes by file name; renamed over ``path`` on success."""
    path = Path(path)
    ensure_folder(path.parent)
    with _replacing(path) as tmp:
        yield tmp
        _sync_file(tmp)


@contextlib.contextmanager
def atomic_folder(path: Path, *, markers: tuple[str, ...], partial: Path | None = None) -> Iterator[Path]:
    """A fresh temporary folder (``partial``, or a hidden name beside ``path``) that replaces ``path`` on success.

    An existing ``path`` is only replaced when it holds one of ``markers`` (a file unfork writes), so a
    folder of the user's is never swapped away; if the process dies mid-swap the old folder survives
    under a hidden ``.old`` name.
    """
    path = Path(path)
    if path.exists() and not owned(path, markers):
        raise NotOurs(f"{path} exists and was not written by unfork (it holds none of {', '.join(markers)})",
                      hint="choose another output, or move that folder away yourself")
    ensure_folder(path.parent)
    tmp = Path(partial) if partial is not None else _temp_beside(path, ".partial")
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp)  # a partial folder an interrupted run of ours left
    tmp.mkdir()
    try:
        yield tmp
        for f in sorted(tmp.rglob("*")):
            if f.is_file() and not f.is_symlink():
                _sync_file(f)
        _swap_in(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in _FULL:
            raise _disk_full(path, exc) from None
        raise


def _swap_in(tmp: Path, path: Path) -> None:
    if not path.exists():
        os.replace(tmp, path)
    else:
        old = _temp_beside(path, ".old")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(path.parent)


def sweep_temporaries(folder: Path) -> None:
    """Clear what a killed writer left below ``folder``; call it holding the folder's lock, so none is live.

    A ``.old`` folder whose original is missing (killed mid-swap) is put back, never deleted.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob(".*"), key=lambda p: len(p.parts)):
        match = _TEMP.fullmatch(path.name)
        if match is None or path.is_symlink() or not path.exists():
            continue
        _clear(path, match["kind"], path.with_name(match["name"]))


def sweep_beside(path: Path) -> None:
    """Clear what a killed writer of ``path`` itself left beside it (its temporaries, a ``.old`` of a swap
    cut short, which is put back); the caller holds ``path``'s lock, and other names are left alone."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    for other in sorted(path.parent.glob(f".{glob.escape(path.name)}.*")):
        match = _TEMP.fullmatch(other.name)
        if match is None or match["name"] != path.name or other.is_symlink():
            continue
        _clear(other, match["kind"], path)


def _clear(temporary: Path, kind: str, original: Path) -> None:
    """Remove a killed writer's ``temporary``, except a ``.old`` whose ``original`` is gone: that goes back."""
    if kind == "old" and not original.exists():
        os.replace(temporary, original)
    elif temporary.is_dir():
        shutil.rmtree(temporary, ignore_errors=True)
    else:
        temporary.unlink(missing_ok=True)


def owned(path: Path, markers: tuple[str, ...]) -> bool:
    """Whether ``path`` is a real folder (no symlink) holding one of unfork's ``markers``, or an empty one."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return False
    return not any(path.iterdir()) or any((path / m).is_file() for m in markers)


def remove_tree(path: Path, *, markers: tuple[str, ...]) -> None:
    """Delete a folder unfork wrote, known by one of its ``markers``; anything else is refused, never deleted."""
    path = Path(path)
    if not owned(path, markers):
        raise NotOurs(f"refusing to delete {path}: unfork did not write it (it holds none of {', '.join(markers)})",
                      hint="delete it yourself if you are sure")
    shutil.rmtree(path)


def atomic_copy(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` through a temporary file, so ``dst`` is the old file or a whole copy."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable; some file systems cannot sync a folder, which is no reason to fail."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _not_a_file(path: Path, mode: int) -> NotAFile:
    kind = next((what for test, what in _KINDS if test(mode)), "a special file")
    return NotAFile(f"{path}: is {kind}, not a regular file", hint="point it at a file")


def read_regular_bytes(path: Path) -> bytes:
    """The bytes of ``path``, refusing anything but a regular file (a FIFO would block the read forever)."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise _not_a_file(Path(path), st.st_mode)
    # O_NONBLOCK: should a FIFO replace the file after the check, opening it still returns at once.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise _not_a_file(Path(path), st.st_mode)
        return f.read()


def ensure_folder(path: Path) -> None:
    """``mkdir -p`` that reports a file in the way as a user error rather than a traceback."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (Path(path), *Path(path).parents) if p.exists() and not p.is_dir()), path)
        raise UserError(f"cannot create the folder {path}: {blocker} is a file, not a folder",
                        hint="move that file away, or choose another folder") from None


def new_folder(parent: Path, name: str) -> Path:
    """Create ``parent/name``, or ``name-2``, ``name-3``... if taken: a folder no other run shares."""
    ensure_folder(parent)
    for n in range(1, 10_000):
        path = Path(parent) / (name if n == 1 else f"{name}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise UserError(f"no free folder name like {Path(parent) / name}")


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[Path]:
    """Hold ``folder`` for this process; another process that asks fails at once, told who holds it."""
    with file_lock(Path(folder) / LOCK_NAME, str(folder)) as path:
        yield path


@contextlib.contextmanager
def file_lock(path: Path, what: str) -> Iterator[Path]:
    """Hold the lock file ``path`` (guarding ``what``); a second process fails at once, told the holder's PID."""
    import fcntl

    path = Path(path)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise FolderLocked(f"{what} is in use by another unfork process (PID {holder})",
                               hint=f"wait for it to finish (e.g. 'tail --pid={holder} -f /dev/null'), "
                                    "or choose another folder") from None
        # The holder before us may have removed the file after we opened it: lock the one in place.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        path.unlink(missing_ok=True)  # before the unlock, so no one can lock a file that is going away
        os.close(fd)


@contextlib.contextmanager
def run_folder(out: Path | None, parent: Path, name: str) -> Iterator[Path]:
    """``out`` (made if missing), or else a new unique ``parent/name``, locked while the run writes into it.

    If the run fails, a folder made here that holds nothing but the lock file is removed again,
    so a run that wrote nothing leaves nothing behind; anything else is kept.
    """
    if out is None:
        folder, made = new_folder(parent, name), True
    else:
        folder, made = Path(out), not Path(out).is_dir()
        ensure_folder(folder)
    try:
        with folder_lock(folder):
            sweep_temporaries(folder)
            yield folder
    except BaseException:
        if made:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only succeeds when empty: never deletes what the run wrote
        raise
