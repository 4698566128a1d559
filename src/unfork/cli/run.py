"""``unfork run``: the main job, one command from a taxonomy to a taught model.

Today it covers the stages that exist: it prepares the example taxonomy (when
no taxonomy is given), validates every leaf and lists what changed against the
base. Data generation, training and evaluation join as they land.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click


@click.command()
@click.option("--taxonomy-path", type=click.Path(file_okay=False), default=None,
              help="Taxonomy to teach from. Default: a fresh copy of the bundled example taxonomy.")
@click.option("--taxonomy-base", default=None, help="Git ref the changed leaves are found against. Default: main "
              "for the example, taxonomy.base from the config otherwise.")
@click.option("--output-dir", type=click.Path(file_okay=False), default=None,
              help="Run folder. Default: <data dir>/runs/<timestamp>.")
def run(taxonomy_path: str | None, taxonomy_base: str | None, output_dir: str | None) -> None:
    """The main job: validate → (generate → train → evaluate) → report.

    Without --taxonomy-path it copies the bundled example taxonomy (a freeform
    skill, a grounded skill and a knowledge leaf about a fictional island) into
    the run folder, so a new user sees the whole flow with no set-up.
    """
    from unfork.config import load_config
    from unfork.paths import get_paths
    from unfork.taxonomy.diff import taxonomy_diff
    from unfork.taxonomy.examples import prepare_example_taxonomy
    from unfork.taxonomy.output import print_reports
    from unfork.taxonomy.validate import validate_files

    cfg = load_config()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(output_dir) if output_dir else get_paths().runs_dir / stamp
    out.mkdir(parents=True, exist_ok=True)
    stages: dict[str, float] = {}

    start = time.perf_counter()
    if taxonomy_path:
        root = Path(taxonomy_path)
        base = taxonomy_base or cfg.taxonomy.base
    else:
        root = prepare_example_taxonomy(out / "taxonomy")
        base = taxonomy_base or "main"
        click.echo(f"Example taxonomy prepared in {root}")
    stages["prepare"] = time.perf_counter() - start

    start = time.perf_counter()
    click.secho("\n== Validate: which leaves changed, and are they valid?", bold=True)
    diff = taxonomy_diff(root, base)
    reports = validate_files(diff.leaves + diff.misnamed, root)
    status = print_reports(reports, "text", color=sys.stdout.isatty())
    stages["validate"] = time.perf_counter() - start

    summary = {
        "taxonomy": str(root), "base": base, "merge_base": diff.merge_base,
        "leaves": [{"path": r.path, "kind": r.kind, "valid": r.ok} for r in reports],
        "stage_seconds": {k: round(v, 3) for k, v in stages.items()},
    }
    (out / "run.json").write_text(json.dumps(summary, indent=2) + "\n")
    if status:
        raise click.ClickException("fix the errors above, then run again")
    click.echo(f"\nRun folder: {out}")
    click.echo("Next stages (data generation, training, evaluation) are not part of this version yet.")
