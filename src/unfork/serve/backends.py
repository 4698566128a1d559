"""Which engine serves a model, and the command that starts it.

Every backend runs as a child program listening on its own address:
``llama-server`` (GGUF files), unfork's small transformers app (Hugging Face
folders, CPU or GPU), or vLLM's OpenAI server (GPU machines). Each renders
prompts with the model's own chat template.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

from unfork.errors import MissingExtraError, UserError
from unfork.serve import llama_cpp

BACKENDS = ("llama-cpp", "transformers", "vllm")
API_KEY_ENV = {"llama-cpp": "LLAMA_API_KEY", "transformers": "UNFORK_SERVE_API_KEY", "vllm": "VLLM_API_KEY"}


@dataclass(frozen=True)
class ModelRef:
    """A model on disk: ``format`` is ``"gguf"`` (one file) or ``"hf"`` (a Hugging Face folder)."""

    name: str
    path: Path
    format: str


@dataclass
class ServerSpec:
    backend: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    model_id: str = ""
    engine: str = ""
    health_path: str = "/health"


def model_format(path: Path) -> str | None:
    if path.is_file():
        with path.open("rb") as fh:
            if fh.read(4) == b"GGUF":
                return "gguf"
        return "gguf" if path.suffix.lower() == ".gguf" else None
    if path.is_dir() and (path / "config.json").is_file():
        return "hf"
    return None


def resolve(name_or_path: str, *, download: bool = True, format: str | None = None) -> ModelRef:
    """A catalog name or a path, as a :class:`ModelRef` (through the model store when present)."""
    try:
        from unfork.models import resolve_model
    except ImportError:
        resolve_model = None
    if resolve_model is not None:
        found = resolve_model(name_or_path, download=download, format=format)
        return ModelRef(found.name, Path(found.path), found.format)
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise UserError(f"model '{name_or_path}' not found: no such file or folder.")
    fmt = model_format(path)
    if fmt is None:
        raise UserError(f"'{name_or_path}' is neither a GGUF file nor a Hugging Face model folder "
                        "(a folder with config.json).")
    return ModelRef(path.stem if path.is_file() else path.name, path.resolve(), fmt)


def prepare(name_or_path: str, requested: str, *, download: bool = True) -> tuple[ModelRef, str]:
    """Resolve the model and pick its backend.

    Asking for transformers or vllm with a GGUF catalog model converts it to a
    Hugging Face folder once (the store caches it); llama-cpp with a folder is
    an error that says how to convert.
    """
    ref = resolve(name_or_path, download=download)
    if requested in ("transformers", "vllm") and ref.format == "gguf":
        ref = resolve(name_or_path, download=download, format="hf")
    return ref, choose_backend(requested, ref.format)


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def choose_backend(requested: str, fmt: str, *, vllm: bool | None = None, cuda: bool | None = None) -> str:
    """``auto``: GGUF → llama-cpp; a Hugging Face folder → vllm with CUDA, else transformers."""
    if requested != "auto":
        if requested not in BACKENDS:
            raise UserError(f"unknown backend '{requested}'", hint=f"one of: auto, {', '.join(BACKENDS)}")
        check_format(requested, fmt)
        return requested
    if fmt == "gguf":
        return "llama-cpp"
    if vllm is None:
        vllm = vllm_installed()
    if vllm and (cuda if cuda is not None else cuda_available()):
        return "vllm"
    return "transformers"


def check_format(backend: str, fmt: str) -> None:
    if backend == "llama-cpp" and fmt != "gguf":
        raise UserError("the llama-cpp backend serves GGUF files, and this model is a Hugging Face folder.",
                        hint="use --backend transformers (or vllm), or convert it: unfork model convert")
    if backend in ("transformers", "vllm") and fmt == "gguf":
        raise UserError(f"the {backend} backend serves Hugging Face folders, and this model is a GGUF file.",
                        hint="use --backend llama-cpp, or convert it: unfork model convert")


def check_installed(backend: str) -> None:
    """Raise a clear error if the backend's program or package is missing."""
    if backend == "llama-cpp":
        llama_cpp.find_llama_server()
    elif backend == "transformers":
        for package in ("torch", "transformers", "starlette", "uvicorn"):
            if importlib.util.find_spec(package) is None:
                raise MissingExtraError(package, "transformers", "The transformers backend")
    elif backend == "vllm" and not vllm_installed():
        raise MissingExtraError("vllm", "vllm", "The vllm backend")


def build_spec(backend: str, model: ModelRef, *, host: str, port: int, api_key: str | None = None,
               parallel: int = 4, ctx_size: int = 4096, threads: int | None = None,
               webui: bool = False, model_id: str | None = None, shared_context: bool = True) -> ServerSpec:
    """The command line and environment that start ``backend`` on ``host:port``."""
    model_id = model_id or model.name
    env: dict[str, str] = {}
    if api_key:
        env[API_KEY_ENV[backend]] = api_key
    if backend == "llama-cpp":
        argv = llama_cpp.llama_server_command(
            llama_cpp.find_llama_server(), model.path, host=host, port=port, alias=model_id,
            parallel=parallel, ctx_size=ctx_size, threads=threads, webui=webui, shared_context=shared_context)
        return ServerSpec(backend, argv, {**llama_cpp.llama_server_env(), **env}, model_id, "llama-server")
    if backend == "transformers":
        argv = [sys.executable, "-m", "unfork.serve.hf_app", "--model", str(model.path), "--host", host,
                "--port", str(port), "--model-id", model_id, "--ctx-size", str(ctx_size)]
        return ServerSpec(backend, argv, env, model_id, "transformers server")
    if backend == "vllm":
        argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model.path),
                "--host", host, "--port", str(port), "--served-model-name", model_id,
                "--max-num-seqs", str(parallel), "--max-model-len", str(ctx_size)]
        return ServerSpec(backend, argv, env, model_id, "vLLM")
    raise UserError(f"unknown backend '{backend}'")


def client_host(host: str) -> str:
    """Where a local client connects to reach a server bound to ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def base_url(host: str, port: int) -> str:
    h = client_host(host)
    if ":" in h:
        h = f"[{h}]"
    return f"http://{h}:{port}"
