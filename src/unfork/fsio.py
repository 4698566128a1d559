"""Files and folders that never lose a user's data: atomic writes, unique run folders, one writer per folder."""

from __future__ import annotations

import contextlib
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

from unfork.errors import UserError

LOCK_NAME = ".unfork.lock"
"""The lock file :func:`folder_lock` keeps inside a folder while a run writes into it."""


class FolderLocked(UserError):
    pass


class NotAFile(UserError):
    pass


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader, or a crash, sees the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    # os.open with 0o666 lets the umask decide the mode, as a plain write would.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str, encoding: str = "utf-8") -> None:
    atomic_write_bytes(path, text.encode(encoding))


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
    import fcntl

    path = Path(folder) / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise FolderLocked(f"{folder} is in use by another unfork process (PID {holder})",
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
            yield folder
    except BaseException:
        if made:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only succeeds when empty: never deletes what the run wrote
        raise
