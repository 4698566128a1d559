"""llama.cpp's ``llama-server``: where the program is and how to start it.

unfork does not proxy llama.cpp: it starts ``llama-server`` on the address the
user asked for and supervises it, so requests pay no extra hop. The program is
built from the llama.cpp source vendored in the pinned llama-cpp-python sdist
by ``scripts/build_llama_cpp.sh``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from unfork.errors import UserError
from unfork.paths import get_paths

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
BINARY = "llama-server"
ENV_BINARY = "UNFORK_LLAMA_SERVER"
BUILD_SCRIPT = "scripts/build_llama_cpp.sh"


class BackendNotInstalledError(UserError):
    pass


def repo_root() -> Path | None:
    """The source checkout this package runs from (editable installs), if any."""
    for parent in Path(__file__).resolve().parents:
        if (parent / BUILD_SCRIPT).is_file():
            return parent
    return None


def candidate_dirs() -> list[Path]:
    """Folders the build script may have filled, most specific first."""
    dirs = []
    if os.environ.get("UNFORK_LLAMA_CPP_DIR"):
        dirs.append(Path(os.environ["UNFORK_LLAMA_CPP_DIR"]).expanduser())
    root = repo_root()
    if root is not None:
        dirs.append(root / ".cache" / "llama.cpp")
    dirs.append(get_paths().cache_dir / "llama.cpp")
    return dirs


def find_llama_server() -> Path:
    """``$UNFORK_LLAMA_SERVER``, else the build script's output, else ``llama-server`` on PATH."""
    explicit = os.environ.get(ENV_BINARY)
    if explicit:
        path = Path(explicit).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise BackendNotInstalledError(
            f"{ENV_BINARY} points to '{explicit}', which is not an executable file.",
            hint=f"unset it, or build llama-server with {BUILD_SCRIPT}")
    for folder in candidate_dirs():
        path = folder / "bin" / BINARY
        if path.is_file() and os.access(path, os.X_OK):
            return path
    on_path = shutil.which(BINARY)
    if on_path:
        return Path(on_path)
    root = repo_root()
    script = str(root / BUILD_SCRIPT) if root else BUILD_SCRIPT
    raise BackendNotInstalledError(
        "the llama-cpp backend needs llama.cpp's 'llama-server' program, which was not found "
        f"(looked at ${ENV_BINARY}, {', '.join(str(d / 'bin') for d in candidate_dirs())} and PATH).",
        hint=f"build it (5 to 20 minutes on 2 cores) with: {script}  "
             f"or point {ENV_BINARY} at an existing llama-server")


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def llama_server_command(binary: Path | str, model_path: Path | str, *, host: str, port: int,
                         alias: str, parallel: int, ctx_size: int, threads: int | None = None,
                         webui: bool = False, shared_context: bool = True) -> list[str]:
    """The ``llama-server`` command line.

    ``--jinja`` makes llama.cpp render prompts with the chat template stored in
    the GGUF file (the model's own), ``-np`` gives ``parallel`` slots decoded
    together by continuous batching, and ``--kv-unified`` lets any one request
    use the whole ``ctx_size`` while the slots share it. Without
    ``shared_context`` each slot has ``ctx_size / parallel`` tokens of its own:
    a server whose slots are all busy with long prompts (a teacher, a judge)
    decodes faster then, since a unified buffer makes every sequence's
    attention run over all the slots' tokens (at 8 slots and ~650-token
    prompts, 53 against 45 tokens/s here; at ~1,080, 46 against 34). The API key travels in
    the environment (``LLAMA_API_KEY``), not on the command line where ``ps``
    would show it.
    """
    threads = threads or default_threads()
    cmd = [
        str(binary),
        "--model", str(model_path),
        "--host", host,
        "--port", str(port),
        "--alias", alias,
        "--parallel", str(parallel),
        "--cont-batching",
        "--kv-unified" if shared_context else "--no-kv-unified",
        "--ctx-size", str(ctx_size),
        "--threads", str(threads),
        "--threads-batch", str(threads),
        "--jinja",
        # Browsers may read answers only from pages served on this machine (llama.cpp's default is any
        # site), so a web page cannot use a local server without a key behind the user's back.
        "--cors-origins", "localhost",
    ]
    if not webui:
        cmd.append("--no-webui")
    return cmd
