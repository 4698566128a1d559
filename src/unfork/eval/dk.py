"""The ``dk`` benchmark (domain knowledge, like DK-Bench): the user's own questions and reference answers.

The file is JSONL, one question a line::

    {"question": "Where is Marrowvey?", "reference_answer": "In the North Sea, off ..."}

``answer`` or ``reference`` may stand for ``reference_answer``; an optional
``category`` (or ``leaf``) groups the questions in the table. Base and trained
model answer each question greedily and the judge grades both from 1 to 10
against the reference.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unfork.errors import UserError
from unfork.eval.judge import Judge

REFERENCE_KEYS = ("reference_answer", "answer", "reference")
EXAMPLE_LINE = '{"question": "...", "reference_answer": "..."}'


@dataclass
class DKQuestion:
    question: str
    reference: str
    category: str
    line: int


def _text_field(path: Path, n: int, row: dict[str, Any], key: str) -> str:
    value = row[key]
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{path}, line {n}: field '{key}' must be a non-empty string (got {value!r:.60})",
                        hint=f"each line looks like {EXAMPLE_LINE}")
    return value.strip()


def read_questions(path: str | Path) -> list[DKQuestion]:
    """The questions of a dk JSONL file; a UserError names the file, line and field of any mistake."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"no such questions file: {path}", hint=f"a JSONL file, each line {EXAMPLE_LINE}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    out = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise UserError(f"{path}, line {n}: not valid JSON ({exc})",
                            hint=f"each line is one JSON object: {EXAMPLE_LINE}") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}, line {n}: expected a JSON object, got {type(row).__name__}",
                            hint=f"each line looks like {EXAMPLE_LINE}")
        if "question" not in row:
            raise UserError(f"{path}, line {n}: missing field 'question'", hint=f"each line looks like {EXAMPLE_LINE}")
        ref_key = next((k for k in REFERENCE_KEYS if k in row), None)
        if ref_key is None:
            raise UserError(f"{path}, line {n}: missing field 'reference_answer' (or 'answer', 'reference')",
                            hint=f"each line looks like {EXAMPLE_LINE}")
        category = row.get("category", row.get("leaf", path.stem))
        out.append(DKQuestion(_text_field(path, n, row, "question"), _text_field(path, n, row, ref_key),
                              str(category) if category else path.stem, n))
    if not out:
        raise UserError(f"{path} holds no questions", hint=f"one JSON object a line: {EXAMPLE_LINE}")
    return out


def run_dk(model: Any, base_model: Any, *, questions_file: str | Path, judge: Judge | None = None,
           judge_url: str | None = None, judge_model: str | None = None, api_key: str | None = None,
           output_dir: Path | None = None, max_tokens: int = 512, limit: int | None = None,
           system: str | None = None, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Base against trained on the user's questions, graded 1-10 against their reference answers."""
    from unfork.eval.answers import DEFAULT_SYSTEM, ask
    from unfork.eval.compare import answer_both
    from unfork.eval.skills import judge_context, judged_result

    questions = read_questions(questions_file)  # check the file before loading any model
    questions = questions[:limit] if limit else questions
    echo(f"DK: {len(questions)} questions from {questions_file}")
    conversations = [ask(q.question, system or DEFAULT_SYSTEM) for q in questions]
    labels, base, trained = answer_both(model, base_model, conversations, max_tokens=max_tokens, echo=echo)
    rows = [{"leaf": q.category, "question": q.question, "reference": q.reference, "base_answer": b,
             "trained_answer": t, "line": q.line} for q, b, t in zip(questions, base, trained, strict=True)]
    return judged_result("dk", labels, rows, judge_context(judge, judge_url, judge_model, api_key), output_dir, echo,
                         questions_file=str(questions_file))
