"""llama.cpp's ``llama-server``: where the program is and how to start it.

unfork does not proxy llama.cpp: it starts ``llama-server`` on the address the
user asked for and supervises it, so requests pay no extra hop. The program is
built from the llama.cpp source vendored in the pinned llama-cpp-python sdist
by ``scripts/build_llama_cpp.sh``.
"""

from __future__ import annotations

import os
from pathlib import Path

from unfork.errors import UserError
from unfork.models.llama_tools import (
    BUILD_SCRIPT,
    LLAMA_CPP_PYTHON_VERSION,
    ProgramPathError,
    build_script,
    find_program,
    llama_cpp_dirs,
    repo_root,
)

BINARY = "llama-server"
ENV_BINARY = "UNFORK_LLAMA_SERVER"

__all__ = ["BUILD_SCRIPT", "LLAMA_CPP_PYTHON_VERSION", "BackendNotInstalledError", "find_llama_server",
           "llama_server_command", "llama_server_env", "repo_root"]


class BackendNotInstalledError(UserError):
    pass


def find_llama_server() -> Path:
    """``$UNFORK_LLAMA_SERVER``, else the build script's output, else ``llama-server`` on PATH."""
    try:
        found = find_program(BINARY, ENV_BINARY)
    except ProgramPathError as exc:
        raise BackendNotInstalledError(exc.message, hint=exc.hint) from None
    if found is not None:
        return found
    raise BackendNotInstalledError(
        "the llama-cpp backend needs llama.cpp's 'llama-server' program, which was not found "
        f"(looked at ${ENV_BINARY}, {', '.join(str(d / 'bin') for d in llama_cpp_dirs())} and PATH).",
        hint=f"build it (5 to 20 minutes on 2 cores) with: {build_script()}  "
             f"or point {ENV_BINARY} at an existing llama-server")


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def llama_server_env() -> dict[str, str]:
    """Environment for ``llama-server``: a fixed glibc trim threshold, so the memory a huge request took
    (llama.cpp reads and tokenizes bodies up to 100 MB) goes back to the system afterwards instead of
    staying with the server; a value the user set is kept."""
    if "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return {}
    return {"MALLOC_TRIM_THRESHOLD_": str(128 * 1024)}


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
    attention run over all the slots' tokens. The API key travels in the
    environment (``LLAMA_API_KEY``), not on the command line where ``ps``
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
