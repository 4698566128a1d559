"""``unfork run``: the main job, one command from a taxonomy to a taught and evaluated model.

validate → generate (teacher) → train (student) → evaluate base against
trained → report. Every stage writes into the run folder and records its time
in ``run.json``; running the same command with the same ``--output-dir`` again
resumes: generation replays its journal, training continues from its last
checkpoint, and the knowledge exam is reused. ``--resume`` finds the newest
run whose ``run.json`` says it did not finish, and goes on with the options it
recorded.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from unfork.config import load_profile

if TYPE_CHECKING:
    from unfork.taxonomy.leaf import Leaf

# The main job's settings (profiles/main.yaml says why each differs from the defaults).
PROFILE = load_profile("main")
# The options run.json records, so resuming a run goes on with the settings it started with.
RECORDED = ("taxonomy_path", "taxonomy_base", "pipeline", "num_samples", "knowledge_samples", "epochs",
            "knowledge_epochs", "method", "teacher", "skip_eval")


class Run:
    """The run folder and its ``run.json``, rewritten after each stage so a crash keeps what is done."""

    def __init__(self, out: Path, settings: dict[str, Any], options: dict[str, Any] | None = None):
        self.out = out
        self.path = out / "run.json"
        old = read_run(out)
        self.data: dict[str, Any] = {**old, "settings": settings, "options": options or old.get("options", {}),
                                     "stage_seconds": old.get("stage_seconds", {}), "finished": False}

    @contextmanager
    def stage(self, name: str, title: str):
        click.secho(f"\n== {title}", bold=True)
        start = time.perf_counter()
        yield
        self.data["stage_seconds"][name] = round(time.perf_counter() - start, 1)
        self.save()

    def save(self) -> None:
        self.data["total_seconds"] = round(sum(self.data["stage_seconds"].values()), 1)
        from unfork.fsio import atomic_write_text

        atomic_write_text(self.path, json.dumps(self.data, indent=2, ensure_ascii=False) + "\n")


def read_run(folder: Path) -> dict[str, Any]:
    """A run folder's ``run.json``, or nothing when it has none or it cannot be read."""
    try:
        data = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_finished(folder: Path, data: dict[str, Any]) -> bool:
    """Whether the run ended; a run.json from before the "finished" field counts as finished once it has a report."""
    if "finished" in data:
        return bool(data["finished"])
    return (folder / "report.md").is_file() or "report" in data.get("stage_seconds", {})


def newest_unfinished(runs_dir: Path) -> Path | None:
    """The run folder under ``runs_dir`` that was last written to and did not finish."""
    found = []
    for folder in runs_dir.iterdir() if runs_dir.is_dir() else []:
        data = read_run(folder)
        if data and not is_finished(folder, data):
            found.append(((folder / "run.json").stat().st_mtime, folder.name, folder))
    return max(found)[2] if found else None


def resume_options(ctx: click.Context, options: dict[str, Any], resume: bool, runs_dir: Path) -> dict[str, Any]:
    """The command's options with those a resumed run recorded in place of the ones left at their defaults."""
    out = options["output_dir"]
    if resume:
        if out is not None:
            raise click.UsageError("give either --resume (the newest unfinished run) or --output-dir, not both")
        found = newest_unfinished(runs_dir)
        if found is None:
            raise click.ClickException(f"no unfinished run in {runs_dir} to resume")
        out = str(found)
        click.echo(f"Resuming {found}", err=True)
    if out is None:
        return options
    recorded = read_run(Path(out)).get("options") or {}
    left = {name for name in RECORDED
            if ctx.get_parameter_source(name) in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)}
    return {**options, **{k: v for k, v in recorded.items() if k in left}, "output_dir": out}


def resume_hint(out: Path, runs_dir: Path) -> str:
    """What to type to go on with a run that stopped."""
    out = out.absolute()
    lines = [f"The run stopped before it finished; what it did is kept in {out}.",
             f"To go on from there: unfork run --output-dir {shlex.quote(str(out))}"]
    with contextlib.suppress(OSError):
        if out.resolve().parent == runs_dir.resolve():
            lines.append("                 or: unfork run --resume")
    return "\n".join(lines)


@click.command()
@click.option("--taxonomy-path", type=click.Path(file_okay=False), default=None,
              help="Taxonomy to teach from. Default: a fresh copy of the bundled example taxonomy.")
@click.option("--taxonomy-base", default=None, help="Git ref the changed leaves are found against. Default: main "
              "for the example, taxonomy.base from the config otherwise.")
@click.option("--output-dir", type=click.Path(file_okay=False), default=None,
              help="Run folder. Default: <data dir>/runs/<timestamp>. Give the folder of a stopped run to resume it "
              "with the options it recorded (options given here win).")
@click.option("--resume", is_flag=True,
              help="Go on with the newest unfinished run under <data dir>/runs, with the options it recorded.")
@click.option("--pipeline", default=PROFILE["generate.pipeline"], show_default=True,
              help="SDG pipeline: simple, full (with judges; slow on a CPU teacher) or a folder.")
@click.option("--num-samples", type=int, default=PROFILE["generate.num_samples"], show_default=True,
              help="Accepted samples to aim for per skill leaf.")
@click.option("--knowledge-samples", type=int, default=PROFILE["generate.knowledge_samples"], show_default=True,
              help="Accepted samples to aim for per knowledge leaf.")
@click.option("--epochs", type=int, default=PROFILE["train.epochs"], show_default=True,
              help="Training epochs of the skills phase (and of the knowledge phase, unless --knowledge-epochs).")
@click.option("--knowledge-epochs", type=int, default=PROFILE["train.knowledge_epochs"], show_default=True,
              help="Training epochs of the knowledge phase (memorising facts takes more passes).")
@click.option("--method", type=click.Choice(["lora", "full"]), default=PROFILE["train.method"], show_default=True,
              help="Fine-tuning method (full fine-tuning suits the small default student best).")
@click.option("--teacher", default="config", show_default=True,
              help="Teacher for data generation, the exam and judging (catalog name or path); 'config': "
              "models.teacher from the config (by default qwen2.5-coder-1.5b-instruct).")
@click.option("--skip-eval", is_flag=True, help="Stop after training (no evaluation, a report without scores).")
def run(resume: bool, **options: Any) -> None:
    """The main job: validate → generate → train → evaluate → report.

    \b
    Without --taxonomy-path it copies the bundled example taxonomy (a freeform
    skill, a grounded skill and a knowledge leaf about a fictional island) into
    the run folder, so a new user sees the whole flow with no set-up: the
    default teacher writes training data, the default student learns it, and
    the report compares the student before and after on questions it was
    not trained on. About 15 minutes on a 2-core CPU.
    """
    from unfork.paths import get_paths

    main_job(**resume_options(click.get_current_context(), options, resume, get_paths().runs_dir))


def main_job(taxonomy_path: str | None, taxonomy_base: str | None, output_dir: str | None, pipeline: str,
             num_samples: int, knowledge_samples: int, epochs: int, knowledge_epochs: int, method: str,
             teacher: str | None, skip_eval: bool) -> None:
    """Every stage into one run folder; a stopped run says how to go on with it."""
    from unfork.config import load_config
    from unfork.paths import get_paths

    profile = dict(PROFILE)
    if method != profile["train.method"]:  # the profile's learning rate suits its own method only
        del profile["train.learning_rate"]
    cfg = load_config(overrides={**profile, "models.teacher": None if teacher == "config" else teacher,
                                 "generate.pipeline": pipeline, "generate.num_samples": num_samples,
                                 "generate.knowledge_samples": knowledge_samples, "train.epochs": epochs,
                                 "train.knowledge_epochs": knowledge_epochs, "train.method": method})
    from unfork.fsio import run_folder

    # Held until the command ends, so no second run writes into this folder meanwhile.
    runs_dir = get_paths().runs_dir
    out = click.get_current_context().with_resource(run_folder(
        Path(output_dir) if output_dir else None, runs_dir, time.strftime("%Y%m%d-%H%M%S")))
    settings = {"teacher": cfg.models.teacher, "student": cfg.models.student, "num_samples": num_samples,
                "knowledge_samples": knowledge_samples, "pipeline": cfg.generate.pipeline, "epochs": epochs,
                "knowledge_epochs": knowledge_epochs, "method": method, "learning_rate": cfg.train.learning_rate,
                "keep_epoch": cfg.train.keep_epoch, "mix": cfg.generate.mix}
    options = {"taxonomy_path": str(Path(taxonomy_path).absolute()) if taxonomy_path else None, "taxonomy_base": taxonomy_base, "pipeline": pipeline,
               "num_samples": num_samples, "knowledge_samples": knowledge_samples, "epochs": epochs,
               "knowledge_epochs": knowledge_epochs, "method": method, "teacher": cfg.models.teacher,
               "skip_eval": skip_eval}
    job = Run(out, settings, options)
    try:
        job.save()  # from now on the folder says what it holds and how it was asked for
        train_dir, md, html = stages(job, cfg, options)
    except (Exception, KeyboardInterrupt):
        with contextlib.suppress(OSError):
            job.save()
        click.echo("\n" + resume_hint(out, runs_dir), err=True)
        raise
    job.data["finished"] = True
    job.save()
    click.echo(f"\nDone in {job.data['total_seconds'] / 60:.1f} min. Run folder: {out}")
    click.echo(f"  report:         {html}\n                  {md}")
    click.echo(f"  chat with it:   unfork model chat --model {train_dir / 'final'}")
    click.echo(f"  export to GGUF: unfork model convert {train_dir} --to gguf")


def stages(job: Run, cfg: Any, options: dict[str, Any]) -> tuple[Path, Path, Path]:
    """validate → generate → train → evaluate → report; the training run and the report's two files."""
    out = job.out
    with job.stage("validate", "Validate: which leaves changed, and are they valid?"):
        root, base, leaves = validate(job, options["taxonomy_path"], options["taxonomy_base"], cfg)
    with job.stage("generate", f"Generate: the teacher {cfg.models.teacher} writes training data"):
        dataset = generate(job, cfg, root, base, leaves)
    with job.stage("train", f"Train: {cfg.models.student} learns it ({cfg.train.method})"):
        train_dir = train(job, cfg, dataset)
    results: list[dict[str, Any]] = []
    comparisons = None
    if not options["skip_eval"]:
        with job.stage("evaluate", "Evaluate: the student before and after, on questions it was not trained on"):
            results, comparisons = evaluate(job, cfg, train_dir, dataset)
    with job.stage("report", "Report"):
        from unfork.eval.report import write_report

        md, html = write_report(out, run=job.data, dataset_dir=dataset, train_dir=train_dir, results=results,
                                comparisons=comparisons)
    return train_dir, md, html


def validate(job: Run, taxonomy_path: str | None, taxonomy_base: str | None,
             cfg: Any) -> tuple[Path, str, list[Leaf]]:
    """The taxonomy, its base and its changed leaves, validated once here for every later stage."""
    from unfork.taxonomy.diff import taxonomy_diff
    from unfork.taxonomy.examples import prepare_example_taxonomy
    from unfork.taxonomy.leaf import check_leaves
    from unfork.taxonomy.output import print_reports

    if taxonomy_path:
        root, base = Path(taxonomy_path), taxonomy_base or cfg.taxonomy.base
    else:
        root = job.out / "taxonomy"
        if not (root / ".git").is_dir():
            root = prepare_example_taxonomy(root)
        base = taxonomy_base or "main"
        click.echo(f"Example taxonomy in {root}")
    diff = taxonomy_diff(root, base)
    checked = check_leaves(diff.leaves + diff.misnamed, root)
    reports = [report for report, _ in checked]
    status = print_reports(reports, "text", color=sys.stdout.isatty())
    job.data.update(taxonomy=str(root), base=base, merge_base=diff.merge_base,
                    leaves=[{"path": r.path, "kind": r.kind, "valid": r.ok,
                             "seed_examples": len(leaf.seed_rows()) if leaf else None} for r, leaf in checked])
    if status:
        job.save()
        raise click.ClickException("fix the errors above, then run again")
    if not reports:
        raise click.ClickException(f"no new or changed leaf against '{base}' in {root}: nothing to teach "
                                   "(use --taxonomy-base empty to teach every leaf)")
    return root, base, [leaf for _, leaf in checked if leaf is not None]


def generate(job: Run, cfg: Any, root: Path, base: str, leaves: list[Leaf]) -> Path:
    from unfork.logs import stderr_console
    from unfork.sdg.run import GenerateRequest, generate_dataset

    console = stderr_console()
    req = GenerateRequest(taxonomy=root, base=base, teacher=cfg.models.teacher, output_dir=job.out / "dataset")
    out, manifest = generate_dataset(req, cfg.generate, console=console, show_progress=sys.stderr.isatty(),
                                     echo=lambda m: console.print(m, highlight=False, soft_wrap=True), leaves=leaves)
    job.data["dataset"] = {"path": str(out), "files": manifest.files,
                           "leaves": {e["leaf"]: {k: e[k] for k in ("accepted", "rejected", "train_samples")}
                                      for e in manifest.leaves}}
    return out


def train(job: Run, cfg: Any, dataset: Path) -> Path:
    from unfork.contracts import TrainingRun
    from unfork.train.recipe import train as run_training

    run_dir = run_training(cfg.train, model=cfg.models.student, data_path=dataset, output_dir=job.out / "train")
    info = TrainingRun(run_dir).read_info()
    if info is None:
        raise click.ClickException(f"training wrote no readable {TrainingRun(run_dir).info_path}")
    job.data["training"] = {"path": str(run_dir), "base_model": info.base_model, "phases": info.phases,
                            "dtype": info.dtype}
    return run_dir


def evaluate(job: Run, cfg: Any, train_dir: Path, dataset: Path) -> tuple[list[dict[str, Any]], list[dict] | None]:
    from unfork.contracts import TrainingRun
    from unfork.eval.knowledge import run_knowledge

    trained = str(TrainingRun(train_dir).final)
    base_model = job.data["training"]["base_model"]
    eval_dir = job.out / "eval"
    results = []
    scores: dict[str, Any] = {}
    # A teacher given as an endpoint (generate.endpoint_urls) also writes the exam and judges.
    judge_url = cfg.generate.endpoint_urls[0] if cfg.generate.endpoint_urls else None
    has_knowledge = any(e.get("kind") == "knowledge" for e in job.data.get("leaves", []))
    seconds = job.data["eval_seconds"] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:  # where the evaluation's minutes go, in run.json
        nonlocal clock
        seconds[name] = round(time.perf_counter() - clock, 1)
        clock = time.perf_counter()

    if has_knowledge:
        res = run_knowledge(trained, base_model, data_path=dataset, judge_url=judge_url,
                            judge_model=None if judge_url else cfg.models.teacher, output_dir=eval_dir,
                            echo=click.echo)
        results.append(res)
        _print_overall(res)
        scores["knowledge"] = res["overall"]
        lap("knowledge")
    skills = _run_skills(trained, base_model, dataset, eval_dir, cfg.models.teacher, judge_url)
    if skills is not None:
        results.append(skills)
        _print_overall(skills)
        scores["skills"] = skills["overall"]
        lap("skills")
    from unfork.eval.general import run_general

    general = run_general(trained, base_model, output_dir=eval_dir, echo=click.echo)
    results.append(general)
    _print_overall(general)
    scores["general"] = general["overall"]
    lap("general")
    job.data["scores"] = scores
    comparisons = _comparisons(trained, base_model, dataset)
    lap("answers side by side")
    return results, comparisons


def _run_skills(trained: str, base_model: str, dataset: Path, eval_dir: Path, teacher: str,
                judge_url: str | None) -> dict[str, Any] | None:
    from unfork.contracts import DatasetFolder

    manifest = DatasetFolder(dataset).read_manifest()
    if manifest is None or not manifest.count(DatasetFolder.TEST_SKILLS):
        return None
    from unfork.eval.judge import open_judge
    from unfork.eval.skills import run_skills

    with open_judge(judge_url, model=None if judge_url else teacher) as judge:
        return run_skills(trained, base_model, data_path=dataset, judge=judge, output_dir=eval_dir, max_tokens=160)


def _comparisons(trained: str, base_model: str, dataset: Path) -> list[dict[str, Any]] | None:
    """Base and trained answers to the knowledge leaves' seed questions (the test split), for the report."""
    from unfork.eval.compare import compare, read_test_split

    items = read_test_split(dataset, ("knowledge",))[:5]
    if not items:
        return None
    return compare(trained, base_model, items, max_tokens=96, echo=click.echo)["items"]


def _print_overall(result: dict[str, Any], echo: Callable[[str], None] = click.echo) -> None:
    o = result["overall"]
    unit = "%" if result["metric"] == "accuracy" else "/10"
    echo(f"  {result['benchmark']}: base {o['base']}{unit} → trained {o['trained']}{unit} "
         f"({o['delta']:+}) on {o['n']} questions")
