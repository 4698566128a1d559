"""The ``general`` benchmark: a guard against forgetting.

Teaching a small model one new leaf can damage what it already knew. This
benchmark asks base and trained the same general multiple-choice questions and
reports accuracy per subject, so a regression shows up next to the gain.

Three sources of questions, in order of preference:

* ``tasks_path`` holding lm-evaluation-harness task files (``*.yaml``): the
  harness runs them (``pip install 'unfork[eval]'``); its data must already be
  local, since nothing can be downloaded during an evaluation;
* ``tasks_path`` holding MMLU-format CSV files (``question,A,B,C,D,answer``,
  one file per subject, as in MMLU's ``data/test/``): scored here;
* nothing: the small set bundled with unfork (``general_questions.jsonl``),
  easy facts over six subjects, written for this project. Its arithmetic
  choices are sentences ("The answer is 4."), since per-byte scoring of a
  bare digit leaves a small model guessing.

Scoring is lm-evaluation-harness's ``acc_norm`` way: the option with the highest
log-likelihood per byte is the model's choice. A model behind an endpoint
cannot give log-likelihoods, so it is asked for a letter instead. Chance is 25%.
"""

from __future__ import annotations

import csv
import gc
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unfork.errors import MissingExtraError, UserError

BUNDLED = Path(__file__).with_name("general_questions.jsonl")
LETTERS = "ABCD"
CHANCE = 25.0


@dataclass
class Question:
    subject: str
    question: str
    choices: list[str]
    answer: int  # index into choices


# --------------------------------------------------------------------------- questions


def check_question(q: Question) -> str | None:
    """Why ``q`` is not a fair four-option question, or None."""
    if not q.subject.strip() or not q.question.strip():
        return "empty subject or question"
    if len(q.choices) != 4 or any(not str(c).strip() for c in q.choices):
        return "needs exactly four non-empty choices"
    if len({str(c).strip().casefold() for c in q.choices}) != 4:
        return "choices are not distinct"
    if not 0 <= q.answer < 4:
        return f"answer index {q.answer} is not 0-3"
    return None


def read_jsonl_questions(path: Path) -> list[Question]:
    """Questions from a JSONL file of ``{"subject", "question", "choices", "answer"}``."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            q = Question(str(row["subject"]), str(row["question"]), [str(c) for c in row["choices"]],
                         int(row["answer"]))
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path}:{n}: not a question record ({e})") from None
        problem = check_question(q)
        if problem:
            raise UserError(f"{path}:{n}: {problem}")
        out.append(q)
    return out


def bundled_questions() -> list[Question]:
    return read_jsonl_questions(BUNDLED)


def _answer_index(text: str) -> int | None:
    text = text.strip().upper()
    if text in ("A", "B", "C", "D"):
        return LETTERS.index(text)
    if text in ("0", "1", "2", "3"):
        return int(text)
    return None


def _subject_of(csv_path: Path) -> str:
    # MMLU names its files <subject>_test.csv, <subject>_dev.csv, <subject>_val.csv.
    return re.sub(r"_(test|dev|val)$", "", csv_path.stem).replace("_", " ")


def csv_files(folder: Path) -> list[Path]:
    """The CSV files of an MMLU-style folder: ``test/`` when there is one (MMLU's layout), else all."""
    test = folder / "test"
    if test.is_dir() and any(test.glob("*.csv")):
        return sorted(test.glob("*.csv"))
    return sorted(folder.rglob("*.csv"))


def read_mmlu_folder(folder: Path) -> list[Question]:
    """Questions from CSV files of ``question,A,B,C,D,answer`` rows (a header row is optional)."""
    out = []
    for path in csv_files(folder):
        with open(path, encoding="utf-8", newline="") as fh:
            for n, row in enumerate(csv.reader(fh), start=1):
                if n == 1 and [c.strip().lower() for c in row] == ["question", "a", "b", "c", "d", "answer"]:
                    continue
                if not any(c.strip() for c in row):
                    continue
                answer = _answer_index(row[5]) if len(row) == 6 else None
                if answer is None:
                    raise UserError(f"{path}:{n}: expected question,A,B,C,D,answer with answer A-D",
                                    hint="MMLU's CSV format: six columns, no quotes needed unless a field has commas")
                q = Question(_subject_of(path), row[0], [c.strip() for c in row[1:5]], answer)
                problem = check_question(q)
                if problem:
                    raise UserError(f"{path}:{n}: {problem}")
                out.append(q)
    if not out:
        raise UserError(f"{folder} has no questions (no CSV rows)",
                        hint="pass a folder of MMLU-format CSV files or of lm-evaluation-harness task files")
    return out


def limit_per_subject(questions: list[Question], limit: int | None) -> list[Question]:
    """The first ``limit`` questions of each subject (lm-evaluation-harness's ``--limit`` is per task too)."""
    if limit is None:
        return questions
    seen: dict[str, int] = {}
    out = []
    for q in questions:
        seen[q.subject] = seen.get(q.subject, 0) + 1
        if seen[q.subject] <= limit:
            out.append(q)
    return out


# --------------------------------------------------------------------------- scoring


def parse_letter(reply: str, choices: Sequence[str]) -> int | None:
    """The option a free-text reply names: a letter (``B``, ``(B)``, ``Answer: B``) or an option's text."""
    m = re.search(r"\b(?:answer|option)\s*(?:is|:)?\s*\(?([ABCD])\b", reply, re.I)
    # A bare leading letter counts only when it stands alone ("B", "B.", "(B)"), not the article in "A lot".
    m = m or re.match(r"\s*\(?([ABCD])\s*(?:[.):\]]|$|\n)", reply)
    if m:
        return LETTERS.index(m.group(1).upper())
    lowered = reply.strip().casefold()
    hits = [i for i, c in enumerate(choices) if c.casefold() in lowered]
    return hits[0] if len(hits) == 1 else None


def lettered_prompt(question: str, choices: Sequence[str]) -> str:
    listing = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    return f"{question}\n\n{listing}\n\nAnswer with the letter of the correct option only."


def pick(responder: Any, q: Question, system: str | None) -> int | None:
    return choose(responder, q.question, q.choices, system)


def choose(responder: Any, question: str, choices: Sequence[str], system: str | None) -> int | None:
    """The index the model chooses: by log-likelihood when it can give one, else by the letter it answers."""
    from unfork.eval.answers import ask

    scores = responder.option_scores(ask(question, system), choices)
    if scores is not None:
        return max(range(len(choices)), key=lambda i: scores[i])
    reply = responder.answer([ask(lettered_prompt(question, choices), system)], max_tokens=16)[0]
    return parse_letter(reply, choices)


def score_questions(responder: Any, questions: list[Question], system: str | None) -> list[int | None]:
    return [pick(responder, q, system) for q in questions]


def _score_model(open_: Callable[[str], Any], model: str, questions: list[Question],
                 system: str | None) -> tuple[str, list[int | None]]:
    # Its own function so the responder (and its weights) is gone when it returns: one model in memory at a time.
    with open_(model) as responder:
        return responder.name, score_questions(responder, questions, system)


def summarize(questions: list[Question], base: list[int | None], trained: list[int | None],
              labels: tuple[str, str], source: str) -> dict[str, Any]:
    """The result shape every benchmark shares: accuracy in percent, per subject and overall."""
    def pct(picks: list[int | None], qs: list[Question]) -> float:
        return round(100.0 * sum(p == q.answer for p, q in zip(picks, qs, strict=True)) / len(qs), 1) if qs else 0.0

    per_leaf = []
    for subject in dict.fromkeys(q.subject for q in questions):
        idx = [i for i, q in enumerate(questions) if q.subject == subject]
        qs = [questions[i] for i in idx]
        b, t = pct([base[i] for i in idx], qs), pct([trained[i] for i in idx], qs)
        per_leaf.append({"leaf": subject, "n": len(idx), "base": b, "trained": t, "delta": round(t - b, 1),
                         "verdict": "improved" if t > b else "regressed" if t < b else "same"})
    b, t = pct(base, questions), pct(trained, questions)
    items = [{"leaf": q.subject, "question": q.question, "reference": q.choices[q.answer], "options": q.choices,
              "base_answer": None if bp is None else q.choices[bp],
              "trained_answer": None if tp is None else q.choices[tp],
              "base_score": int(bp == q.answer), "trained_score": int(tp == q.answer)}
             for q, bp, tp in zip(questions, base, trained, strict=True)]
    return {"benchmark": "general", "models": {"base": labels[0], "trained": labels[1]}, "metric": "accuracy",
            "overall": {"base": b, "trained": t, "delta": round(t - b, 1), "n": len(questions)},
            "per_leaf": per_leaf, "items": items, "judge": None, "chance": CHANCE, "source": source,
            "unparsed": {"base": sum(p is None for p in base), "trained": sum(p is None for p in trained)}}


# --------------------------------------------------------------------------- lm-evaluation-harness


def harness_tasks(folder: Path) -> list[str]:
    """The task (or group) names that the lm-evaluation-harness YAML files of ``folder`` define."""
    import yaml

    names = []
    for path in sorted(folder.rglob("*.yaml")):
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError:
            continue  # harness files may use its own !function tags; those are not task entry points here
        if not isinstance(doc, dict):
            continue
        if isinstance(doc.get("task"), str):
            names.append(doc["task"])
        elif isinstance(doc.get("group"), str):
            names.append(doc["group"])
    return list(dict.fromkeys(names))


def _harness_run(model: str, folder: Path, tasks: list[str], limit: int | None) -> dict[str, Any]:
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise MissingExtraError("lm_eval", "eval", "running lm-evaluation-harness tasks") from None
    from unfork.models import resolve_model

    path = resolve_model(model, format="hf").path
    out = lm_eval.simple_evaluate(model="hf", model_args={"pretrained": str(path), "dtype": "float32"},
                                  tasks=tasks, task_manager=TaskManager(include_path=str(folder)),
                                  limit=limit, log_samples=True)
    scores = {}
    for task, metrics in out.get("results", {}).items():
        if task in out.get("groups", {}) or "acc,none" not in metrics:
            continue  # a group's score is the mean of its tasks, which are listed themselves
        samples = out.get("samples", {}).get(task, [])
        scores[task] = {"acc": float(metrics["acc,none"]), "samples": samples,
                        "n": int(out.get("n-samples", {}).get(task, {}).get("effective", len(samples)))}
    return {"name": str(model), "scores": scores}


def _harness_summary(base: dict[str, Any], trained: dict[str, Any]) -> dict[str, Any]:
    per_leaf, items = [], []
    for task in [t for t in base["scores"] if t in trained["scores"]]:
        b, t = (round(100.0 * run["scores"][task]["acc"], 1) for run in (base, trained))
        n = base["scores"][task]["n"]
        per_leaf.append({"leaf": task, "n": n, "base": b, "trained": t, "delta": round(t - b, 1),
                         "verdict": "improved" if t > b else "regressed" if t < b else "same"})
        by_id = {s.get("doc_id"): s for s in trained["scores"][task]["samples"]}
        for s in base["scores"][task]["samples"]:
            other = by_id.get(s.get("doc_id"), {})
            doc = s.get("doc", {})
            items.append({"leaf": task, "question": str(doc.get("question", "")), "reference": str(s.get("target", "")),
                          "base_answer": None, "trained_answer": None,
                          "base_score": int(s.get("acc", 0)), "trained_score": int(other.get("acc", 0))})
    total = sum(row["n"] for row in per_leaf)

    def mean(which: str) -> float:
        return round(sum(row[which] * row["n"] for row in per_leaf) / total, 1) if total else 0.0

    b, t = mean("base"), mean("trained")
    return {"benchmark": "general", "models": {"base": base["name"], "trained": trained["name"]},
            "metric": "accuracy", "overall": {"base": b, "trained": t, "delta": round(t - b, 1), "n": total},
            "per_leaf": per_leaf, "items": items, "judge": None, "chance": CHANCE, "source": "lm-evaluation-harness"}


# --------------------------------------------------------------------------- the benchmark


def _default_open(model: str):
    from unfork.eval.answers import open_responder

    return open_responder(model)


def run_general(model: str, base_model: str, *, tasks_path: str | Path | None = None,
                output_dir: str | Path | None = None, limit: int | None = None,
                system: str | None = None, open_model: Callable[[str], Any] | None = None,
                echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Base against trained on general questions; ``limit`` caps the questions per subject (or task).

    ``open_model`` opens a responder context for a model name (tests pass a
    fake); the default loads it in process, one model at a time.
    """
    from unfork.eval.answers import DEFAULT_SYSTEM

    folder = Path(tasks_path) if tasks_path else None
    if folder is not None and not folder.is_dir():
        raise UserError(f"no such folder: {folder}", hint="--tasks-path takes a local folder of tasks or CSV files")
    tasks = harness_tasks(folder) if folder is not None else []
    if tasks:
        echo(f"General benchmark: lm-evaluation-harness tasks {', '.join(tasks)} from {folder}")
        base_run = _harness_run(base_model, folder, tasks, limit)
        gc.collect()
        result = _harness_summary(base_run, _harness_run(model, folder, tasks, limit))
    else:
        questions = read_mmlu_folder(folder) if folder is not None else bundled_questions()
        questions = limit_per_subject(questions, limit)
        source = str(folder) if folder is not None else "bundled"
        echo(f"General benchmark: {len(questions)} questions from {source} (chance is {CHANCE:.0f}%)")
        open_ = open_model or _default_open
        system = system if system is not None else DEFAULT_SYSTEM
        base_name, base = _score_model(open_, base_model, questions, system)
        gc.collect()
        trained_name, trained = _score_model(open_, model, questions, system)
        result = summarize(questions, base, trained, (base_name, trained_name), source)
    if output_dir:
        from unfork.eval.results import write_result

        write_result(result, Path(output_dir))
    return result
