"""``unfork data``: each command lives in its own module and loads on use."""

from __future__ import annotations

from unfork.cli.main import lazy_group

COMMANDS = {
    "generate": ("unfork.cli.generate", "generate", "Generate synthetic training data from the taxonomy."),
    "list": ("unfork.cli.generate", "list_datasets", "List generated datasets with their counts."),
}


@lazy_group(COMMANDS)
def data() -> None:
    """Generate and list synthetic training data."""
