"""The ``skills`` benchmark: does the trained model do the new skills better than the base did?

Like InstructLab's MT-Bench-branch: the questions are each skill leaf's seed
examples (the dataset's ``test_skills.jsonl``, never trained on); base and
trained model answer them greedily; a judge grades every answer from 1 to 10
with the contributor's seed answer as the reference. The result gives the mean
grade per leaf and whether the leaf improved or regressed.

The answers come first and the judge second, so on a small machine the
student and the judge's server never compete for the cores.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from unfork.errors import UserError
from unfork.eval.judge import Judge, open_judge
from unfork.eval.results import summarize, write_result


@contextlib.contextmanager
def judge_context(judge: Judge | None, judge_url: str | None, judge_model: str | None,
                  api_key: str | None) -> Iterator[Judge]:
    """The given judge, or one opened now (and closed after) from the endpoint settings."""
    if judge is not None:
        yield judge
        return
    with open_judge(judge_url, judge_model, api_key) as opened:
        yield opened


def judged_items(judge: Judge, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Add ``base_score`` and ``trained_score`` (1-10 or None) and the judge's raw replies to each row.

    Also returns the judge's summary for these verdicts only (a judge may serve several benchmarks).
    """
    asks = [(r["question"], r[f"{side}_answer"], r.get("reference") or None)
            for side in ("base", "trained") for r in rows]
    verdicts = judge.score(asks)
    base, trained = verdicts[:len(rows)], verdicts[len(rows):]
    items = [{**r, "base_score": b.value, "trained_score": t.value, "base_judge_raw": b.raw,
              "trained_judge_raw": t.raw} for r, b, t in zip(rows, base, trained, strict=True)]
    return items, judge.summary(verdicts)


def run_skills(model: Any, base_model: Any, *, data_path: str | Path | None = None, judge: Judge | None = None,
               judge_url: str | None = None, judge_model: str | None = None, api_key: str | None = None,
               output_dir: Path | None = None, max_tokens: int = 512, limit: int | None = None,
               echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Base against trained on the skill leaves' test questions, graded 1-10 by the judge.

    ``model`` and ``base_model`` are model names or paths (or objects with
    ``.answer``); ``data_path`` defaults to the dataset the trained run used.
    Without ``judge``, one is opened from ``judge_url`` (default: the
    configured teacher on a temporary local server).
    """
    from unfork.eval.compare import answer_both, dataset_for, read_test_split, run_of

    run = run_of(model) if isinstance(model, (str, Path)) else None
    dataset = dataset_for(run, data_path)
    items = read_test_split(dataset, ("skills",))
    items = items[:limit] if limit else items
    if not items:
        raise UserError(f"{dataset} has no skill test questions (test_skills.jsonl is missing or empty)",
                        hint="the skills benchmark needs skill leaves in the taxonomy")
    echo(f"Skills: {len(items)} questions from {dataset}")
    labels, base, trained = answer_both(model, base_model, [it.conversation for it in items],
                                        max_tokens=max_tokens, echo=echo)
    rows = [{"leaf": it.leaf, "question": it.question, "reference": it.reference, "base_answer": b,
             "trained_answer": t} for it, b, t in zip(items, base, trained, strict=True)]
    return judged_result("skills", labels, rows, judge_context(judge, judge_url, judge_model, api_key),
                         output_dir, echo, dataset=str(dataset))


def judged_result(benchmark: str, labels: tuple[str, str], rows: list[dict[str, Any]], judging: Any,
                  output_dir: Path | str | None, echo: Callable[[str], None], **extra: Any) -> dict[str, Any]:
    """Grade both models' answers with the judge that ``judging`` opens; the result, written when asked."""
    with judging as j:
        echo(f"Judging {2 * len(rows)} answers with {j.label or j.model}")
        scored, summary = judged_items(j, rows)
    result = summarize(benchmark, labels, scored, metric="score_1_10", judge=summary)
    result.update(extra)
    if output_dir:
        write_result(result, Path(output_dir))
    return result

