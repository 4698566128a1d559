"""Serving models through an OpenAI-compatible API.

- :mod:`unfork.serve.launch`: ``running_server()``, a temporary local server
  for chat, data generation and evaluation.
- :mod:`unfork.serve.backends`: backend choice and command lines.
- :mod:`unfork.serve.llama_cpp`: finding and starting ``llama-server``.
- :mod:`unfork.serve.openai_api` / :mod:`unfork.serve.hf_app`: unfork's own
  server for Hugging Face folders (transformers).

Nothing here imports torch at import time.
"""

from unfork.serve.launch import Endpoint, running_server

__all__ = ["Endpoint", "running_server"]
