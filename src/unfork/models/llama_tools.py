"""Where a llama.cpp build lives: its folder, its programs (llama-server, llama-quantize) and its converter.

Serving and converting look in the same places in the same order, so a build
that one of them finds the other finds too. Standard library only.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from unfork.errors import UserError
from unfork.paths import get_paths

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
BUILD_SCRIPT = "scripts/build_llama_cpp.sh"
DIR_ENV = "UNFORK_LLAMA_CPP_DIR"
CONVERTER = "convert_hf_to_gguf.py"


class ProgramPathError(UserError):
    """An environment variable names a program that is not an executable file."""


def repo_root() -> Path | None:
    """The source checkout this package runs from (editable installs), if any."""
    for parent in Path(__file__).resolve().parents:
        if (parent / BUILD_SCRIPT).is_file() and (parent / "pyproject.toml").is_file():
            return parent
    return None


def llama_cpp_dirs() -> list[Path]:
    """Where a llama.cpp build (``src/``, ``bin/``) may live, first match wins.

    ``$UNFORK_LLAMA_CPP_DIR``, then ``<checkout>/.cache/llama.cpp`` (written by
    ``scripts/build_llama_cpp.sh``), then ``<unfork cache>/llama.cpp``.
    """
    dirs = []
    if os.environ.get(DIR_ENV):
        dirs.append(Path(os.environ[DIR_ENV]).expanduser())
    root = repo_root()
    if root is not None:
        dirs.append(root / ".cache" / "llama.cpp")
    dirs.append(get_paths().cache_dir / "llama.cpp")
    return dirs


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_program(name: str, env_var: str) -> Path | None:
    """``$env_var`` (which must be executable), else ``bin/<name>`` of a build folder, else ``name`` on PATH."""
    explicit = os.environ.get(env_var)
    if explicit:
        path = Path(explicit).expanduser()
        if _executable(path):
            return path
        raise ProgramPathError(f"{env_var} points to '{explicit}', which is not an executable file.",
                               hint=f"unset it, or build {name} with {BUILD_SCRIPT}")
    for folder in llama_cpp_dirs():
        path = folder / "bin" / name
        if _executable(path):
            return path
    on_path = shutil.which(name)
    return Path(on_path) if on_path else None


def find_converter() -> Path | None:
    """llama.cpp's ``convert_hf_to_gguf.py`` in a build folder's ``src/``."""
    for folder in llama_cpp_dirs():
        script = folder / "src" / CONVERTER
        if script.is_file():
            return script
    return None


def find_quantize() -> Path | None:
    return find_program("llama-quantize", "UNFORK_LLAMA_QUANTIZE")


def build_script() -> str:
    """The build script's path in this checkout, or its name in the repository."""
    root = repo_root()
    return str(root / BUILD_SCRIPT) if root else BUILD_SCRIPT
