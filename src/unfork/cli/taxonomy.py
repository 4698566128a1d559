"""``unfork taxonomy``: validate leaves and list what changed against a git base."""

from __future__ import annotations

import sys
from pathlib import Path

import click

FORMATS = click.Choice(["text", "json", "github"])


@click.group()
def taxonomy() -> None:
    """Validate taxonomy leaves (qna.yaml) and list what changed.

    Files follow InstructLab's taxonomy format (qna.yaml versions 1-3) and its
    acceptance rules; every problem is reported with its file, line, column,
    YAML path and a hint on how to fix it.
    """


def _taxonomy_root(taxonomy_path: str | None) -> Path:
    from unfork.config import load_config

    if taxonomy_path:
        return Path(taxonomy_path)
    return load_config().taxonomy_path()


def _expand(paths: tuple[str, ...], root: Path) -> tuple[list[Path], list[Path]]:
    from unfork.errors import UsageError
    from unfork.taxonomy.diff import all_leaves
    from unfork.taxonomy.validate import is_misnamed

    files: list[Path] = []
    misnamed: list[Path] = []
    if not paths:
        if not root.is_dir():
            raise UsageError(f"taxonomy folder {root} does not exist",
                             hint="pass --taxonomy-path DIR, or set taxonomy.path with 'unfork config init'")
        return all_leaves(root)
    for raw in paths:
        p = Path(raw)
        if not raw:
            raise UsageError("an empty path was given", hint="pass the path of a qna.yaml file or a taxonomy folder")
        if p.is_dir() and p.name.lower() in ("qna.yaml", "qna.yml"):
            raise UsageError(f"{raw} is a folder, not a qna.yaml file", hint="pass the path of a qna.yaml file")
        if p.is_dir():
            leaves, bad = all_leaves(p)
            files += leaves
            misnamed += bad
        elif is_misnamed(p):
            misnamed.append(p)
        elif p.exists() or p.is_symlink():
            files.append(p)
        else:
            raise UsageError(f"{raw}: no such file or folder")
    return files, misnamed


def _report(reports, fmt: str, *, quiet: bool = False) -> int:
    from unfork.taxonomy.output import print_reports

    return print_reports(reports, fmt, quiet=quiet, color=sys.stdout.isatty(), echo=click.echo)


@taxonomy.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--taxonomy-path", type=click.Path(file_okay=False),
              help="Taxonomy root. Default: taxonomy.path from the config.")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True,
              help="text for people, json (one object per file per line) for programs, github for Actions annotations.")
@click.option("-q", "--quiet", is_flag=True, help="Print only problems and the summary.")
@click.option("-j", "--jobs", type=int, default=None, help="Processes to use for many files. Default: all cores.")
def validate(paths: tuple[str, ...], taxonomy_path: str | None, fmt: str, quiet: bool, jobs: int | None) -> None:
    """Validate qna.yaml files: the PATHS given (files or folders), or every leaf of the taxonomy.

    Exit status: 0 when no file has errors, 1 when some do, 2 for a usage error.
    """
    from unfork.taxonomy.validate import validate_file, validate_files

    root = _taxonomy_root(taxonomy_path)
    files, misnamed = _expand(paths, root)
    base = root if root.is_dir() else None
    reports = validate_files(files, base, jobs=jobs) + [validate_file(p, base) for p in misnamed]
    reports.sort(key=lambda r: r.path)
    sys.exit(_report(reports, fmt, quiet=quiet))


@taxonomy.command()
@click.option("--taxonomy-path", type=click.Path(file_okay=False),
              help="Taxonomy root (a git repository). Default: taxonomy.path from the config.")
@click.option("--taxonomy-base", default=None,
              help="Git ref to compare against, or 'empty' for every leaf. Default: taxonomy.base (origin/main).")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True, help="Output format.")
@click.option("-q", "--quiet", is_flag=True, help="Print only problems and the summary.")
def diff(taxonomy_path: str | None, taxonomy_base: str | None, fmt: str, quiet: bool) -> None:
    """List new or changed leaves against a git base, then validate them.

    As in InstructLab: untracked files plus every change (committed, staged or
    not) since the first commit on HEAD's first-parent chain that the base
    contains; deleted leaves are left out.
    """
    from unfork.config import load_config
    from unfork.taxonomy.diff import taxonomy_diff
    from unfork.taxonomy.output import visible
    from unfork.taxonomy.validate import validate_file, validate_files

    cfg = load_config()
    root = Path(taxonomy_path) if taxonomy_path else cfg.taxonomy_path()
    base = taxonomy_base or cfg.taxonomy.base
    result = taxonomy_diff(root, base)
    if fmt == "text" and not quiet:
        since = f" since {result.merge_base[:12]}" if result.merge_base else ""
        click.echo(f"{len(result.leaves)} new or changed leaves against '{base}'{since}:")
        for leaf in result.leaves:
            shown = leaf.relative_to(root.resolve()) if leaf.is_relative_to(root.resolve()) else leaf
            click.echo(f"  {visible(str(shown))}")
        click.echo()
    reports = validate_files(result.leaves, root) + [validate_file(p, root) for p in result.misnamed]
    reports.sort(key=lambda r: r.path)
    sys.exit(_report(reports, fmt, quiet=quiet))
