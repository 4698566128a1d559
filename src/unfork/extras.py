"""Which optional extra brings each optional package, so a missing one is one line, not a traceback."""

from __future__ import annotations

from unfork.errors import MissingExtraError

# top-level module -> (package to install, extra that brings it)
OPTIONAL: dict[str, tuple[str, str]] = {
    "torch": ("torch", "train"),
    "transformers": ("transformers", "train"),
    "accelerate": ("accelerate", "train"),
    "safetensors": ("safetensors", "train"),
    "numpy": ("numpy", "train"),
    "gguf": ("gguf", "convert"),
    "sentencepiece": ("sentencepiece", "convert"),
    "starlette": ("starlette", "transformers"),
    "uvicorn": ("uvicorn", "transformers"),
    "pypdf": ("pypdf", "pdf"),
    "huggingface_hub": ("huggingface_hub", "hf"),
    "lm_eval": ("lm-eval", "eval"),
    "peft": ("peft", "bench"),
    "vllm": ("vllm", "vllm"),
}


def missing_extra(exc: ModuleNotFoundError, purpose: str = "This command") -> MissingExtraError | None:
    """The user-facing error for an optional package that is not installed; None for anything else."""
    top = (exc.name or "").split(".")[0]
    if top not in OPTIONAL:
        return None
    package, extra = OPTIONAL[top]
    return MissingExtraError(package, extra, purpose)
