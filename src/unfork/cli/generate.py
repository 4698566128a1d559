"""``unfork data generate`` and ``unfork data list``."""

from __future__ import annotations

from pathlib import Path

import click

from unfork.cli.options import collect, config_options, ilab_alias


@click.command()
@click.option("--taxonomy-path", type=click.Path(file_okay=False), default=None,
              help="Taxonomy root. Default: taxonomy.path from the config.")
@click.option("--taxonomy-base", default=None,
              help="Git ref to find changed leaves against; 'empty' for every leaf. Default: taxonomy.base.")
@config_options("generate", "pipeline", "num_samples", "samples_per_seed", "max_concurrency", "seed")
@click.option("--endpoint-url", "endpoint_url", multiple=True,
              help="OpenAI-compatible teacher endpoint (repeat to spread requests over several servers). "
                   "Default: start the configured teacher locally.")
@config_options("generate", "endpoint_model")
@click.option("--teacher", default=None, help="Teacher to serve locally when no endpoint is given "
              "(catalog name or path). Default: models.teacher.")
@click.option("--model", default=None, hidden=True, help="Old name of --endpoint-model (with an endpoint) or --teacher.")
@click.option("--api-key", default=None, envvar="UNFORK_TEACHER_API_KEY",
              help="API key for the endpoints. [config: generate.api_key]")
@click.option("--output-dir", type=click.Path(file_okay=False), default=None,
              help="Dataset folder. Default: <data dir>/datasets/<timestamp>.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@ilab_alias("--sdg-scale-factor", "samples_per_seed", "--samples-per-seed", type=int,
            meaning=" (samples per seed example of each leaf, as in ilab)")
@ilab_alias("--model-path", "teacher", "--teacher")
def generate(taxonomy_path: str | None, taxonomy_base: str | None, endpoint_url: tuple[str, ...], teacher: str | None,
             model: str | None, api_key: str | None, output_dir: str | None, quiet: bool, **flags) -> None:
    """Generate synthetic training data from the new or changed taxonomy leaves.

    Each leaf's seed examples go through the pipeline's steps (generate,
    judge, filter, remove near-duplicates) with a teacher model. Work is
    journaled as it completes: run the same command again after an
    interruption and it resumes; leaves that did not change are reused.
    """
    from unfork.config import load_config
    from unfork.logs import stderr_console
    from unfork.sdg.run import GenerateRequest, InvalidLeaves, generate_dataset

    overrides = {**collect("generate", flags), "generate.api_key": api_key, "models.teacher": teacher}
    if endpoint_url:
        overrides["generate.endpoint_urls"] = list(endpoint_url)
    cfg = load_config(overrides=overrides)
    g = cfg.generate
    if model is not None:  # the old flag meant the endpoint's model name with an endpoint, else the teacher
        new = "--endpoint-model" if g.endpoint_urls else "--teacher"
        click.echo(f"note: --model is deprecated; read as {new} {model}", err=True)
        cfg = load_config(overrides={"generate.endpoint_model" if g.endpoint_urls else "models.teacher": model,
                                     **{k: v for k, v in overrides.items() if v is not None}})
        g = cfg.generate
    console = stderr_console()
    req = GenerateRequest(taxonomy=Path(taxonomy_path) if taxonomy_path else cfg.taxonomy_path(),
                          base=taxonomy_base or cfg.taxonomy.base, teacher=cfg.models.teacher,
                          output_dir=Path(output_dir) if output_dir else None)
    if g.num_samples < 1 or g.max_concurrency < 1:
        raise click.UsageError("--num-samples and --max-concurrency must be at least 1")
    try:
        out, manifest = generate_dataset(req, g, console=console, show_progress=not quiet,
                                         echo=lambda msg: console.print(msg, highlight=False, soft_wrap=True))
    except InvalidLeaves as exc:
        from unfork.taxonomy.output import print_reports

        print_reports(exc.reports, "text")
        raise
    from unfork.contracts import DatasetFolder

    m, d = manifest, DatasetFolder
    console.print(f"Dataset: {out}\n  train: {m.count(d.TRAIN_ALL)} samples "
                  f"({m.count(d.TRAIN_KNOWLEDGE)} knowledge, {m.count(d.TRAIN_SKILLS)} skills), "
                  f"test: {m.count(d.TEST_ALL)}", highlight=False)


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per dataset.")
def list_datasets(as_json: bool) -> None:
    """List generated datasets with their counts, newest first."""
    import json

    from unfork.paths import get_paths
    from unfork.sdg.output import list_datasets as find

    rows = find(get_paths().datasets_dir)
    if as_json:
        for r in rows:
            click.echo(json.dumps(r))
        return
    if not rows:
        click.echo(f"No datasets in {get_paths().datasets_dir}; create one with 'unfork data generate'.")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    table.add_column("dataset", no_wrap=True)
    for col in ("pipeline", "teacher", "leaves", "train", "knowledge", "skills", "test"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], str(r["pipeline"]), str(r["teacher"]), str(r["leaves"]), str(r["train"]),
                      str(r["knowledge"]), str(r["skills"]), str(r["test"]))
    Console().print(table)
    click.echo(f"in {get_paths().datasets_dir}")
