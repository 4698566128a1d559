"""``unfork config``: create, show and edit the configuration."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

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
@click.option("--taxonomy-repo", default=None, metavar="URL",
              help="Clone this git repository (e.g. https://github.com/instructlab/taxonomy) into the taxonomy "
                   "folder when it is missing. Default: copy unfork's example taxonomy there.")
def init(non_interactive: bool, force: bool, taxonomy_path: str | None, taxonomy_repo: str | None) -> None:
    """Write a commented config file, create the data folders and a taxonomy to start from.

    A missing (or empty) taxonomy folder gets the example taxonomy, or a clone
    of --taxonomy-repo, so that 'unfork taxonomy diff' works right away.
    """
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
    from unfork.fsio import atomic_write_text

    atomic_write_text(paths.config_file, C.render_config_file(cfg))
    click.echo(f"Wrote {paths.config_file}")
    click.echo(f"Data in {paths.data_dir}; models in {paths.models_dir}")
    _seed_taxonomy(cfg.taxonomy_path(), taxonomy_repo)


def _seed_taxonomy(root: Path, repo: str | None) -> None:
    """Give a missing or empty taxonomy folder something to diff against; an existing one is the user's."""
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        if repo:
            click.echo(f"{root} is not empty: left it as it is and did not clone {repo}", err=True)
        return
    if repo is None:
        from unfork.taxonomy.examples import prepare_example_taxonomy

        prepare_example_taxonomy(root)
        click.echo(f"Copied the example taxonomy to {root} (its three leaves are new against origin/main)")
        return
    clone_taxonomy(repo, root)
    click.echo(f"Cloned {repo} into {root}")


def clone_taxonomy(repo: str, dest: Path) -> None:
    """``git clone`` with the document fetcher's isolation: its transports only, no hooks, no LFS, no prompt."""
    import tempfile

    from unfork.documents.fetch import _display, _git, _stderr  # one hardened git for the whole project
    from unfork.errors import UserError

    if repo.startswith("-") or "::" in repo:
        raise UserError(f"refusing the repository {repo!r}", hint="give an https://, ssh:// or git@ URL or a path")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_dir():
        dest.rmdir()  # empty (checked above): git clone wants to create it
    with tempfile.TemporaryDirectory(prefix="unfork-git-") as home:
        proc = _git(["clone", "--quiet", "--no-recurse-submodules", "--", repo, str(dest)], home=home)
    if proc.returncode != 0:
        raise UserError(f"could not clone {_display(repo)}: {_stderr(proc)}",
                        hint="check the URL and your network, or leave out --taxonomy-repo for the example")


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
