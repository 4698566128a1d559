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
from typing import Any

import click

# Settings of the main job that differ from the stand-alone commands' defaults: it must
# teach a 135M student something within ~20 minutes on a 2-core laptop CPU (AVX-512 BF16).
# - The default teacher (1.5B) with the simple pipeline (no judge requests): it writes the
#   data in ~4 minutes there, and keeps far more of it than the fast 0.5B teacher (36 of 54
#   knowledge pairs against 34 of 155). --teacher and --pipeline choose others ('full' on a
#   GPU or a remote endpoint).
# - Knowledge is learnt closed-book, from 60 Q&A and the document's own paragraphs, over 8
#   epochs (memorising numbers and names takes many passes: on one dataset the exam gain
#   was +7 points after 4 epochs, +26 after 8 and +31 after 12), and the skills phase gets 3
#   (its held-out loss is lowest after 2-3). Each phase keeps its last epoch
#   (train.keep_epoch), since the held-out loss on the 15 seed answers bottoms out before
#   the exam score does. No RAFT copies (mix knowledge_raft): each carries two document
#   chunks, so they would double the knowledge phase's time for a skill (answering from
#   given documents) the exam does not test.
# - 1024 tokens per forward: a full fine-tune under bf16 autocast casts every weight once per
#   forward, so bigger forwards are faster (SmolLM2: 265 tokens/s against 241 at the default 512,
#   which suits LoRA's memory); the main job's 4.5 GB peak fits a laptop.
MAIN_JOB = {"teacher": "config", "pipeline": "simple", "num_samples": 10, "knowledge_samples": 60,
            "epochs": 3, "knowledge_epochs": 8, "method": "full", "learning_rate": 3e-4,
            "keep_epoch": "last", "micro_batch_tokens": 1024, "mix": {"knowledge_raft": False}}


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
        self.path.write_text(json.dumps(self.data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


@click.command()
@click.option("--taxonomy-path", type=click.Path(file_okay=False), default=None,
              help="Taxonomy to teach from. Default: a fresh copy of the bundled example taxonomy.")
@click.option("--taxonomy-base", default=None, help="Git ref the changed leaves are found against. Default: main "
              "for the example, taxonomy.base from the config otherwise.")
@click.option("--output-dir", type=click.Path(file_okay=False), default=None,
              help="Run folder. Default: <data dir>/runs/<timestamp>. Give the folder of a stopped run to resume it.")
@click.option("--pipeline", default=MAIN_JOB["pipeline"], show_default=True,
              help="SDG pipeline: simple, full (with judges; slow on a CPU teacher) or a folder.")
@click.option("--num-samples", type=int, default=MAIN_JOB["num_samples"], show_default=True,
              help="Accepted samples to aim for per skill leaf.")
@click.option("--knowledge-samples", type=int, default=MAIN_JOB["knowledge_samples"], show_default=True,
              help="Accepted samples to aim for per knowledge leaf.")
@click.option("--epochs", type=int, default=MAIN_JOB["epochs"], show_default=True,
              help="Training epochs of the skills phase (and of the knowledge phase, unless --knowledge-epochs).")
@click.option("--knowledge-epochs", type=int, default=MAIN_JOB["knowledge_epochs"], show_default=True,
              help="Training epochs of the knowledge phase (memorising facts takes more passes).")
@click.option("--method", type=click.Choice(["lora", "full"]), default=MAIN_JOB["method"], show_default=True,
              help="Fine-tuning method (full fine-tuning suits the small default student best).")
@click.option("--teacher", default=MAIN_JOB["teacher"], show_default=True,
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

    cfg = load_config(overrides={"models.teacher": None if teacher == "config" else teacher,
                                 "generate.pipeline": pipeline, "train.epochs": epochs,
                                 "train.knowledge_epochs": knowledge_epochs, "train.method": method,
                                 "train.learning_rate": MAIN_JOB["learning_rate"] if method == "full" else None,
                                 "train.keep_epoch": MAIN_JOB["keep_epoch"],
                                 "train.micro_batch_tokens": MAIN_JOB["micro_batch_tokens"]})
    out = Path(output_dir) if output_dir else get_paths().runs_dir / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    settings = {"teacher": cfg.models.teacher, "student": cfg.models.student, "num_samples": num_samples,
                "knowledge_samples": knowledge_samples, "pipeline": cfg.generate.pipeline, "epochs": epochs,
                "knowledge_epochs": knowledge_epochs,
                "method": method, "learning_rate": cfg.train.learning_rate, "keep_epoch": cfg.train.keep_epoch, "mix": MAIN_JOB["mix"]}
    job = Run(out, settings)

    with job.stage("validate", "Validate: which leaves changed, and are they valid?"):
        root, base = validate(job, taxonomy_path, taxonomy_base, cfg)
    with job.stage("generate", f"Generate: the teacher {cfg.models.teacher} writes training data"):
        dataset = generate(job, cfg, root, base, num_samples, knowledge_samples)
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


def validate(job: Run, taxonomy_path: str | None, taxonomy_base: str | None, cfg: Any) -> tuple[Path, str]:
    from unfork.taxonomy.diff import taxonomy_diff
    from unfork.taxonomy.examples import prepare_example_taxonomy
    from unfork.taxonomy.output import print_reports
    from unfork.taxonomy.validate import validate_files

    if taxonomy_path:
        root, base = Path(taxonomy_path), taxonomy_base or cfg.taxonomy.base
    else:
        root = job.out / "taxonomy"
        if not (root / ".git").is_dir():
            root = prepare_example_taxonomy(root)
        base = taxonomy_base or "main"
        click.echo(f"Example taxonomy in {root}")
    diff = taxonomy_diff(root, base)
    reports = validate_files(diff.leaves + diff.misnamed, root)
    status = print_reports(reports, "text", color=sys.stdout.isatty())
    job.data.update(taxonomy=str(root), base=base, merge_base=diff.merge_base,
                    leaves=[{"path": r.path, "kind": r.kind, "valid": r.ok,
                             "seed_examples": _seed_count(root, r.path) if r.ok else None} for r in reports])
    if status:
        job.save()
        raise click.ClickException("fix the errors above, then run again")
    if not reports:
        raise click.ClickException(f"no new or changed leaf against '{base}' in {root}: nothing to teach "
                                   "(use --taxonomy-base empty to teach every leaf)")
    return root, base


def _seed_count(root: Path, rel: str) -> int:
    """Seed question/answer pairs of a valid leaf (knowledge: every pair of every context)."""
    from unfork.sdg.leaves import read_leaf

    path = Path(rel) if Path(rel).is_absolute() else root / rel
    return len(read_leaf(path, root).columns["seed_examples"])


def generate(job: Run, cfg: Any, root: Path, base: str, num_samples: int, knowledge_samples: int) -> Path:
    from unfork.sdg.report import stderr_console
    from unfork.sdg.run import GenerateRequest, generate_dataset

    console = stderr_console()
    req = GenerateRequest(taxonomy=root, base=base, pipeline=cfg.generate.pipeline, num_samples=num_samples,
                          knowledge_samples=knowledge_samples, max_concurrency=cfg.generate.max_concurrency,
                          endpoint_urls=list(cfg.generate.endpoint_urls), teacher_model=cfg.models.teacher,
                          output_dir=job.out / "dataset", seed=cfg.generate.seed, mix=MAIN_JOB["mix"])
    out, manifest = generate_dataset(req, console=console, show_progress=sys.stderr.isatty(),
                                     echo=lambda m: console.print(m, highlight=False, soft_wrap=True))
    job.data["dataset"] = {"path": str(out), "files": manifest["files"],
                           "leaves": {e["leaf"]: {k: e[k] for k in ("accepted", "rejected", "train_samples")}
                                      for e in manifest["leaves"]}}
    return out


def train(job: Run, cfg: Any, dataset: Path) -> Path:
    from unfork.train.recipe import train as run_training

    run_dir = run_training(cfg.train, model=cfg.models.student, data_path=dataset, output_dir=job.out / "train")
    info = json.loads((run_dir / "training.json").read_text(encoding="utf-8"))
    job.data["training"] = {"path": str(run_dir), "base_model": info["settings"]["model"],
                            "phases": info.get("phases", {}), "dtype": info.get("dtype")}
    return run_dir


def evaluate(job: Run, cfg: Any, train_dir: Path, dataset: Path) -> tuple[list[dict[str, Any]], list[dict] | None]:
    from unfork.eval.knowledge import run_knowledge

    trained = str(train_dir / "final")
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
    manifest = json.loads((dataset / "manifest.json").read_text(encoding="utf-8"))
    if not manifest["files"].get("test_skills.jsonl"):
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
