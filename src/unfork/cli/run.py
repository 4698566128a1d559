"""``unfork run``: the main job, one command from a taxonomy to a taught and evaluated model.

validate → generate (teacher) → train (student) → evaluate base against
trained → report. Every stage writes into the run folder and records its time
in ``run.json``; running the same command with the same ``--output-dir`` again
resumes: generation replays its journal, training continues from its last
checkpoint, and the knowledge exam is reused.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from unfork.config import load_profile

if TYPE_CHECKING:
    from unfork.taxonomy.leaf import Leaf

# The main job's settings (profiles/main.yaml says why each differs from the defaults).
PROFILE = load_profile("main")


class Run:
    """The run folder and its ``run.json``, rewritten after each stage so a crash keeps what is done."""

    def __init__(self, out: Path, settings: dict[str, Any]):
        self.out = out
        self.path = out / "run.json"
        old = json.loads(self.path.read_text(encoding="utf-8")) if self.path.is_file() else {}
        self.data: dict[str, Any] = {**old, "settings": settings, "stage_seconds": old.get("stage_seconds", {})}

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


@click.command()
@click.option("--taxonomy-path", type=click.Path(file_okay=False), default=None,
              help="Taxonomy to teach from. Default: a fresh copy of the bundled example taxonomy.")
@click.option("--taxonomy-base", default=None, help="Git ref the changed leaves are found against. Default: main "
              "for the example, taxonomy.base from the config otherwise.")
@click.option("--output-dir", type=click.Path(file_okay=False), default=None,
              help="Run folder. Default: <data dir>/runs/<timestamp>. Give the folder of a stopped run to resume it.")
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
def run(taxonomy_path: str | None, taxonomy_base: str | None, output_dir: str | None, pipeline: str, num_samples: int,
        knowledge_samples: int, epochs: int, knowledge_epochs: int, method: str, teacher: str | None,
        skip_eval: bool) -> None:
    """The main job: validate → generate → train → evaluate → report.

    \b
    Without --taxonomy-path it copies the bundled example taxonomy (a freeform
    skill, a grounded skill and a knowledge leaf about a fictional island) into
    the run folder, so a new user sees the whole flow with no set-up: the
    default teacher writes training data, the default student learns it, and
    the report compares the student before and after on questions it was
    not trained on. About 15 minutes on a 2-core CPU.
    """
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
    out = click.get_current_context().with_resource(run_folder(
        Path(output_dir) if output_dir else None, get_paths().runs_dir, time.strftime("%Y%m%d-%H%M%S")))
    settings = {"teacher": cfg.models.teacher, "student": cfg.models.student, "num_samples": num_samples,
                "knowledge_samples": knowledge_samples, "pipeline": cfg.generate.pipeline, "epochs": epochs,
                "knowledge_epochs": knowledge_epochs, "method": method, "learning_rate": cfg.train.learning_rate,
                "keep_epoch": cfg.train.keep_epoch, "mix": cfg.generate.mix}
    job = Run(out, settings)

    with job.stage("validate", "Validate: which leaves changed, and are they valid?"):
        root, base, leaves = validate(job, taxonomy_path, taxonomy_base, cfg)
    with job.stage("generate", f"Generate: the teacher {cfg.models.teacher} writes training data"):
        dataset = generate(job, cfg, root, base, leaves)
    with job.stage("train", f"Train: {cfg.models.student} learns it ({method})"):
        train_dir = train(job, cfg, dataset)
    results: list[dict[str, Any]] = []
    comparisons = None
    if not skip_eval:
        with job.stage("evaluate", "Evaluate: the student before and after, on questions it was not trained on"):
            results, comparisons = evaluate(job, cfg, train_dir, dataset)
    with job.stage("report", "Report"):
        from unfork.eval.report import write_report

        md, html = write_report(out, run=job.data, dataset_dir=dataset, train_dir=train_dir, results=results,
                                comparisons=comparisons)
    job.save()
    click.echo(f"\nDone in {job.data['total_seconds'] / 60:.1f} min. Run folder: {out}")
    click.echo(f"  report:         {html}\n                  {md}")
    click.echo(f"  chat with it:   unfork model chat --model {train_dir / 'final'}")
    click.echo(f"  export to GGUF: unfork model convert {train_dir} --to gguf")


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
    from unfork.sdg.report import stderr_console
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
