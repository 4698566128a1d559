"""``unfork system``: describe this machine."""

from __future__ import annotations

import json

import click


@click.group()
def system() -> None:
    """Describe this machine and the installed backends."""


@system.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info(as_json: bool) -> None:
    """Python, platform, CPU cores and features, RAM, GPUs and optional backends."""
    from unfork.system_info import BACKENDS, system_info

    data = system_info()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    cpu = data["cpu"]
    rows = [
        ("unfork", data["unfork"]),
        ("Python", f"{data['python']} ({data['executable']})"),
        ("Platform", data["platform"]),
        ("CPU", f"{cpu['model']}, {cpu['cores']} cores"),
        ("CPU features", ", ".join(cpu["features"]) or "none detected"),
        ("Memory", f"{data['memory_gib']} GiB" if data["memory_gib"] else "unknown"),
        ("GPUs", "; ".join(data["gpus"]) or "none"),
        ("llama-server", data["llama_server"] or "not built (run scripts/build_llama_cpp.sh)"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")
    click.echo("\nOptional backends:")
    for module, version in data["backends"].items():
        dist, purpose = BACKENDS[module]
        state = f"{version or 'not installed':<16}"
        click.echo(f"  {dist:<18} {state if version else click.style(state, dim=True)} {purpose}")
    click.echo("\nPaths:")
    for key, value in data["paths"].items():
        click.echo(f"  {key:<8} {value}")
