"""``unfork model test`` and ``unfork model evaluate``: the trained model against the one it started from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from unfork.cli.options import ilab_model_path

BENCHMARKS = ("knowledge", "skills", "general", "dk")
# InstructLab's benchmark names -> the unfork benchmark that measures the same thing
ILAB_BENCHMARKS = {"mmlu": "general", "mmlu_branch": "knowledge", "mt_bench_branch": "skills",
                   "mt_bench": "skills", "dk_bench": "dk"}

_model_option = click.option(
    "--model", default=None,
    help="The trained model: a run folder (or its final/), a model folder, GGUF file or catalog name. "
         "Default: the newest run under <data dir>/checkpoints.")
_base_option = click.option(
    "--base-model", default=None,
    help="The model to compare against. Default: the model the trained run started from.")
_data_option = click.option(
    "--data-path", type=click.Path(path_type=Path), default=None,
    help="Dataset folder whose test split is used. Default: the dataset the trained run was trained on, "
         "else the newest one.")


def _err(message: str) -> None:
    click.echo(message, err=True)


@click.command()
@_model_option
@_base_option
@_data_option
@click.option("--max-tokens", type=click.IntRange(1), default=256, show_default=True,
              help="Longest answer, in tokens.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N questions.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the questions and both models' answers as JSON instead of the table.")
@click.option("--output", "-o", "json_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write the questions and both models' answers to this JSON file.")
@ilab_model_path
def test(model: str | None, base_model: str | None, data_path: Path | None, max_tokens: int, limit: int | None,
         as_json: bool, json_file: Path | None) -> None:
    """Show the base and the trained model's answers side by side.

    \b
    The questions are the seed examples of your taxonomy leaves (the test
    split of the dataset: test_skills.jsonl and test_knowledge.jsonl). They
    were not used for training, so this shows what the model learned, next to
    the answer you wrote in qna.yaml. Answers are greedy (no sampling), so the
    same command gives the same answers.
    """
    from rich.console import Console

    from unfork.eval.compare import compare, dataset_for, read_test_split, resolve_target, side_by_side_table

    target = resolve_target(model, base_model)
    dataset = dataset_for(target.run, data_path)
    items = read_test_split(dataset)
    if not items:
        from unfork.contracts import DatasetFolder
        from unfork.errors import UserError

        raise UserError(f"{dataset} has no test questions "
                        f"({DatasetFolder.TEST_SKILLS}, {DatasetFolder.TEST_KNOWLEDGE})")
    items = items[:limit] if limit else items
    _err(f"Test split: {len(items)} questions from {dataset}")
    result = compare(target.model, target.base_model, items, max_tokens=max_tokens, echo=_err)
    result["dataset"] = str(dataset)
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        Console().print(side_by_side_table(result))
    if json_file:
        from unfork.fsio import atomic_write_json, ensure_folder

        ensure_folder(json_file.parent)
        atomic_write_json(json_file, result, ensure_ascii=False)
        _err(f"Wrote {json_file}")


@click.command()
@click.option("--benchmark", "-b", type=click.Choice([*BENCHMARKS, *ILAB_BENCHMARKS]), required=True,
              help="Which benchmark to run (see above; ilab's names are accepted too).")
@_model_option
@_base_option
@click.option("--judge-endpoint-url", default=None,
              help="OpenAI-compatible endpoint of the judge (skills, dk; knowledge: the exam writer). "
                   "Default: start the configured teacher locally. [config: models.teacher]")
@click.option("--judge-model", default=None,
              help="Judge model: the name to send to --judge-endpoint-url, or the model to start locally.")
@click.option("--api-key", default=None, envvar="UNFORK_JUDGE_API_KEY", help="API key for the judge's endpoint.")
@_data_option
@click.option("--questions-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help='dk: your JSONL file, one {"question": ..., "reference_answer": ...} a line.')
@click.option("--tasks-path", type=click.Path(path_type=Path), default=None,
              help="general: a local folder of lm-evaluation-harness task data (e.g. MMLU). Default: the small "
                   "general-knowledge set that comes with unfork.")
@click.option("--output-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Where to write <benchmark>.json. Default: <trained run>/eval/.")
@click.option("--max-tokens", type=click.IntRange(1), default=512, show_default=True,
              help="Longest answer per question, in tokens (skills, dk).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N questions (general: per subject).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON instead of the table.")
@ilab_model_path
def evaluate(benchmark: str, model: str | None, base_model: str | None, judge_endpoint_url: str | None,
             judge_model: str | None, api_key: str | None, data_path: Path | None, questions_file: Path | None,
             tasks_path: Path | None, output_dir: Path | None, max_tokens: int, limit: int | None,
             as_json: bool) -> None:
    """Score the trained model against its base model on a benchmark.

    \b
    knowledge  Did it learn the facts of your documents? The teacher writes
               multiple-choice questions from the knowledge documents (kept
               apart from the training data); accuracy per leaf.
    skills     Did it get better at your skills? Both models answer each
               skill leaf's seed questions and a judge model grades every
               answer 1-10 against your seed answer.
    general    Did it forget what it knew? General-knowledge questions
               (lm-evaluation-harness data if you have it locally); accuracy.
    dk         Your own exam: a JSONL file of questions and reference
               answers (--questions-file), graded 1-10 by the judge.

    \b
    Each leaf is marked improved (green) or regressed (red). The result is
    written to <output-dir>/<benchmark>.json. Judged benchmarks also report
    how many of the judge's replies could not be read. ilab's names run the
    closest one: mmlu general, mmlu_branch knowledge, mt_bench_branch and
    mt_bench skills, dk_bench dk.
    """
    if benchmark in ILAB_BENCHMARKS:
        ours = ILAB_BENCHMARKS[benchmark]
        scope = " (judged on your skill leaves, not MT-Bench's questions)" if benchmark == "mt_bench" else ""
        _err(f"note: ilab's benchmark {benchmark} runs unfork's {ours} benchmark{scope}")
        benchmark = ours
    from unfork.eval.compare import resolve_target
    from unfork.eval.results import print_result, write_result

    if benchmark == "dk" and questions_file is None:
        raise click.UsageError("--benchmark dk needs --questions-file FILE.jsonl")
    if benchmark == "dk":
        from unfork.eval.dk import read_questions

        read_questions(questions_file)  # a mistake in the file shows before any model loads
    target = resolve_target(model, base_model)
    out = output_dir or _default_output_dir(target.run)
    opts = {"judge_url": judge_endpoint_url, "judge_model": judge_model, "api_key": api_key}
    result = _run_benchmark(benchmark, target.model, target.base_model, out, opts, data_path=data_path,
                            questions_file=questions_file, tasks_path=tasks_path, max_tokens=max_tokens,
                            limit=limit)
    path = write_result(result, out)
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        from rich.console import Console

        print_result(result, Console())
    _err(f"Wrote {path}")


def _default_output_dir(run: Path | None) -> Path:
    if run is not None:
        from unfork.contracts import TrainingRun

        return TrainingRun(run).eval_dir
    from unfork.paths import get_paths

    return get_paths().runs_dir / "eval"


def _run_benchmark(benchmark: str, model: str, base_model: str, output_dir: Path, judge: dict[str, Any], *,
                   data_path: Path | None, questions_file: Path | None, tasks_path: Path | None,
                   max_tokens: int, limit: int | None) -> dict[str, Any]:
    if benchmark == "skills":
        from unfork.eval.skills import run_skills

        return run_skills(model, base_model, data_path=data_path, output_dir=output_dir, max_tokens=max_tokens,
                          limit=limit, echo=_err, **judge)
    if benchmark == "dk":
        from unfork.eval.dk import run_dk

        return run_dk(model, base_model, questions_file=questions_file, output_dir=output_dir,
                      max_tokens=max_tokens, limit=limit, echo=_err, **judge)
    if benchmark == "knowledge":
        run_knowledge = _optional("unfork.eval.knowledge", "run_knowledge", benchmark)
        return run_knowledge(model, base_model, data_path=data_path, output_dir=output_dir, **judge,
                             **_accepted(run_knowledge, echo=_err, limit=limit))
    run_general = _optional("unfork.eval.general", "run_general", benchmark)
    return run_general(model, base_model, tasks_path=tasks_path, output_dir=output_dir,
                       **_accepted(run_general, echo=_err, limit=limit))


def _accepted(func: Any, **optional: Any) -> dict[str, Any]:
    """The optional arguments ``func`` takes; progress then goes to stderr, as stdout may carry --json."""
    import inspect

    params = inspect.signature(func).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return {k: v for k, v in optional.items() if (takes_any or k in params) and v is not None}


def _optional(module: str, name: str, benchmark: str) -> Any:
    import importlib

    from unfork.errors import UserError

    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        raise UserError(f"the {benchmark} benchmark is not part of this version of unfork") from None
