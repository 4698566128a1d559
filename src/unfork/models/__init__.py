"""Models: the catalog, the local store, resolving ``--model``, and conversions.

``resolve_model`` is what every command uses to turn a catalog name, a GGUF
file, a Hugging Face folder or a trained run folder into a path; ``ensure_hf``
gives a transformers folder (converting a GGUF once); ``export_gguf`` writes a
Hugging Face folder back to GGUF for llama.cpp.
"""

from __future__ import annotations

from unfork.models.download import download_model
from unfork.models.store import ResolvedModel, resolve_model


def ensure_hf(name_or_path: str, **kwargs) -> ResolvedModel:
    """See :func:`unfork.models.convert.ensure_hf`."""
    from unfork.models.convert import ensure_hf as _ensure_hf

    return _ensure_hf(name_or_path, **kwargs)


def export_gguf(name_or_path: str, **kwargs) -> ResolvedModel:
    """See :func:`unfork.models.convert.export_gguf`."""
    from unfork.models.convert import export_gguf as _export_gguf

    return _export_gguf(name_or_path, **kwargs)


__all__ = ["ResolvedModel", "download_model", "ensure_hf", "export_gguf", "resolve_model"]
