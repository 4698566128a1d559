"""Typed taxonomy leaves for the stages after validation (data generation, evaluation).

A leaf is loaded only after it validated, so these classes hold what the schema
guarantees and nothing is re-checked here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from unfork.errors import UserError
from unfork.taxonomy import reader
from unfork.taxonomy.validate import validate_file


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    context: str | None = None  # grounded skills


@dataclass(frozen=True)
class KnowledgeSeed:
    context: str
    qas: tuple[QA, ...]


@dataclass(frozen=True)
class Document:
    repo: str
    commit: str
    patterns: tuple[str, ...]


@dataclass(frozen=True)
class Leaf:
    path: Path  # absolute
    rel_path: str  # inside the taxonomy, e.g. "compositional_skills/writing/haiku/qna.yaml"
    kind: str  # "skill" or "knowledge"
    version: int
    created_by: str
    content_hash: str  # sha256 of the file's bytes: what caches key on
    task_description: str = ""
    seeds: tuple[QA, ...] = ()  # skills
    domain: str = ""
    document_outline: str = ""
    knowledge_seeds: tuple[KnowledgeSeed, ...] = ()
    document: Document | None = None
    foundational: bool = False

    @property
    def name(self) -> str:
        """A stable short name: the leaf's folders joined by '/' without the file name."""
        return str(Path(self.rel_path).parent)

    @property
    def grounded(self) -> bool:
        return self.kind == "skill" and any(s.context for s in self.seeds)

    def all_qas(self) -> list[QA]:
        """Every seed question/answer; knowledge pairs carry their context."""
        if self.kind == "skill":
            return list(self.seeds)
        return [QA(qa.question, qa.answer, seed.context) for seed in self.knowledge_seeds for qa in seed.qas]


def load_leaf(path: Path, taxonomy_root: Path | None = None) -> Leaf:
    """Validate and load one leaf; a UserError lists the validation errors."""
    report = validate_file(path, taxonomy_root)
    if report.errors:
        shown = "\n".join(f"  {report.path}:{m.line}:{m.column}: {m.message}" for m in report.errors[:10])
        raise UserError(f"{report.path} is not a valid leaf:\n{shown}",
                        hint=f"run 'unfork taxonomy validate {path}' for every problem with hints")
    data_bytes = path.read_bytes()
    text, _ = reader.decode(data_bytes)
    data, _ = reader.to_python(reader.compose(text or "")[0])
    data = data or {}

    def s(key: str) -> str:
        value = data.get(key)
        return value.strip() if isinstance(value, str) else ""

    common = dict(
        path=Path(path).resolve(), rel_path=report.path, kind=report.kind, version=report.version or 1,
        created_by=s("created_by"), content_hash=hashlib.sha256(data_bytes).hexdigest(),
        foundational=report.foundational,
    )
    if report.kind == "knowledge":
        doc = data.get("document") or {}
        return Leaf(
            **common, domain=s("domain"), document_outline=s("document_outline"),
            knowledge_seeds=tuple(
                KnowledgeSeed(seed["context"].strip(),
                              tuple(QA(qa["question"].strip(), qa["answer"].strip())
                                    for qa in seed["questions_and_answers"]))
                for seed in data.get("seed_examples", [])),
            document=Document(str(doc.get("repo", "")), str(doc.get("commit", "")),
                              tuple(doc.get("patterns", []))),
        )
    return Leaf(
        **common, task_description=s("task_description"),
        seeds=tuple(QA(seed["question"].strip(), seed["answer"].strip(),
                       seed["context"].strip() if isinstance(seed.get("context"), str) else None)
                    for seed in data.get("seed_examples", [])),
    )
