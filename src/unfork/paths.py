"""Where unfork keeps its files.

XDG locations by default; one variable, ``UNFORK_HOME``, relocates all of them
(tests point it at a temporary folder).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from unfork.errors import UserError


@dataclass(frozen=True)
class Paths:
    config_dir: Path
    data_dir: Path
    cache_dir: Path

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.yaml"

    @property
    def models_dir(self) -> Path:
        return self.cache_dir / "models"

    @property
    def datasets_dir(self) -> Path:
        return self.data_dir / "datasets"

    @property
    def checkpoints_dir(self) -> Path:
        return self.data_dir / "checkpoints"

    @property
    def taxonomy_dir(self) -> Path:
        return self.data_dir / "taxonomy"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def chat_logs_dir(self) -> Path:
        return self.data_dir / "chatlogs"

    def data_folders(self) -> list[Path]:
        return [self.data_dir, self.datasets_dir, self.checkpoints_dir, self.runs_dir,
                self.chat_logs_dir, self.models_dir]


def _xdg(var: str, fallback: str) -> tuple[Path, str]:
    """The base folder and, for error messages, where it came from."""
    value = os.environ.get(var)
    if value:
        return Path(value), f"{var}={value}"
    try:
        return Path.home() / fallback, "your home folder"
    except RuntimeError:
        raise UserError("cannot tell your home folder", hint="set HOME, or UNFORK_HOME to unfork's folder") from None


def _check_folder(path: Path, source: str) -> None:
    """A folder that exists or can be created: nothing on the way to it may be a file."""
    for p in (path, *path.parents):
        try:
            st = os.stat(p)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:
            return  # unreadable: the command that needs it reports that itself
        if stat.S_ISDIR(st.st_mode):
            return
        raise UserError(f"{source}: {p} is a file, not a folder", hint="move that file away, or choose another folder")


def get_paths() -> Paths:
    home = os.environ.get("UNFORK_HOME")
    if home:
        try:
            root = Path(home).expanduser()
        except RuntimeError:  # ~user of a user this system does not know
            raise UserError(f"UNFORK_HOME={home}: no such user's home folder",
                            hint="give UNFORK_HOME as a full path") from None
        paths, sources = Paths(root / "config", root / "data", root / "cache"), [f"UNFORK_HOME={home}"] * 3
    else:
        bases = [_xdg("XDG_CONFIG_HOME", ".config"), _xdg("XDG_DATA_HOME", ".local/share"),
                 _xdg("XDG_CACHE_HOME", ".cache")]
        paths, sources = Paths(*(base / "unfork" for base, _ in bases)), [source for _, source in bases]
    for folder, source in zip((paths.config_dir, paths.data_dir, paths.cache_dir), sources, strict=True):
        _check_folder(folder, source)
    return paths
