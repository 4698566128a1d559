"""Models: the catalog, the local store, resolving ``--model``, and conversions.

``resolve_model`` is what every command uses to turn a catalog name, a GGUF
file, a Hugging Face folder or a trained run folder into a path; ``ensure_hf``
gives a transformers folder (converting a GGUF once); ``export_gguf`` writes a
Hugging Face folder back to GGUF for llama.cpp. All three live in
:mod:`unfork.models.resolve`.
"""

from __future__ import annotations

from unfork.models.download import download_model
from unfork.models.resolve import ensure_hf, export_gguf, resolve_model
from unfork.models.store import ResolvedModel

__all__ = ["ResolvedModel", "download_model", "ensure_hf", "export_gguf", "resolve_model"]
