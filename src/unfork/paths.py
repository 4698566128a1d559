"""Where unfork keeps its files.

XDG locations by default; one variable, ``UNFORK_HOME``, relocates all of them
(tests point it at a temporary folder).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


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


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def get_paths() -> Paths:
    home = os.environ.get("UNFORK_HOME")
    if home:
        root = Path(home).expanduser()
        return Paths(root / "config", root / "data", root / "cache")
    return Paths(
        _xdg("XDG_CONFIG_HOME", ".config") / "unfork",
        _xdg("XDG_DATA_HOME", ".local/share") / "unfork",
        _xdg("XDG_CACHE_HOME", ".cache") / "unfork",
    )
