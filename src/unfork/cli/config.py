"""``unfork config``: create, show and edit the configuration."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import click


@click.group()
def config() -> None:
    """Create, show and edit the configuration.

    The file lives in $XDG_CONFIG_HOME/unfork/config.yaml (or
    $UNFORK_HOME/config/config.yaml). Every setting can also be given as an
    environment variable UNFORK_<SECTION>_<KEY> or, on the command that uses it,
    as a flag. Precedence: defaults < file < environment < flags.
    """


@config.command()
@click.option("--non-interactive", is_flag=True, help="Use defaults without asking anything.")
@click.option("--force", is_flag=True, help="Overwrite an existing config file.")
@click.option("--taxonomy-path", type=click.Path(file_okay=False), default=None,
              help="Taxonomy folder to record in the config.")
def init(non_interactive: bool, force: bool, taxonomy_path: str | None) -> None:
    """Write a commented config file and create the data folders."""
    from unfork import config as C
    from unfork.paths import get_paths

    paths = get_paths()
    cfg = C.Config()
    if paths.config_file.exists() and not force:
        if non_interactive or not sys.stdin.isatty():
            raise click.ClickException(
                f"{paths.config_file} already exists; pass --force to overwrite it")
        if not click.confirm(f"{paths.config_file} exists. Overwrite it?", default=False):
            click.echo("Left the existing config as it is.")
            return
    if taxonomy_path is None and not non_interactive and sys.stdin.isatty():
        taxonomy_path = click.prompt("Path to your taxonomy", default=str(paths.taxonomy_dir))
    if taxonomy_path:
        cfg.taxonomy.path = str(taxonomy_path)
    for folder in [paths.config_dir, *paths.data_folders()]:
        folder.mkdir(parents=True, exist_ok=True)
    tmp = paths.config_file.with_suffix(".yaml.tmp")
    tmp.write_text(C.render_config_file(cfg), encoding="utf-8")
    os.replace(tmp, paths.config_file)
    click.echo(f"Wrote {paths.config_file}")
    click.echo(f"Data in {paths.data_dir}; models in {paths.models_dir}")


@config.command()
@click.option("--path", "show_path", is_flag=True, help="Print only the config file's path.")
def show(show_path: bool) -> None:
    """Print the resolved settings (file, environment and defaults merged)."""
    import yaml

    from unfork import config as C
    from unfork.paths import get_paths

    paths = get_paths()
    if show_path:
        click.echo(str(paths.config_file))
        return
    cfg = C.load_config()
    source = str(paths.config_file) if paths.config_file.exists() else "defaults (no config file yet)"
    click.echo(f"# source: {source}")
    click.echo(yaml.safe_dump(C.to_dict(cfg), sort_keys=False).rstrip())


@config.command()
def edit() -> None:
    """Open the config file in $EDITOR, then check it."""
    from unfork import config as C
    from unfork.paths import get_paths

    paths = get_paths()
    if not paths.config_file.exists():
        raise click.ClickException("no config file yet; run 'unfork config init' first")
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    subprocess.run([*shlex.split(editor), str(paths.config_file)], check=False)
    C.load_config()  # report mistakes right away, naming the key
    click.echo(f"{paths.config_file} is valid.")
