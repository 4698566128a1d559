"""The one typed taxonomy leaf every stage after validation reads (data generation, evaluation).

A leaf is built from the node tree the validator has just checked, so a file is
parsed once and these classes hold what the schema guarantees: nothing is
re-checked here.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from unfork.errors import UserError
from unfork.taxonomy import reader
from unfork.taxonomy.messages import FileReport
from unfork.taxonomy.validate import PARALLEL_THRESHOLD, parse_file


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    context: str | None = None  # grounded skills; knowledge pairs from all_qas()
    line: int = field(default=0, compare=False)  # 1-based line of the example in the qna.yaml


@dataclass(frozen=True)
class KnowledgeSeed:
    context: str
    qas: tuple[QA, ...]
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class DocumentRef:
    """Where a knowledge leaf's documents live; the fetched text is ``unfork.documents.convert.Document``."""

    repo: str
    commit: str
    patterns: tuple[str, ...]


@dataclass(frozen=True)
class Leaf:
    path: Path  # absolute
    rel_path: str  # as the validator shows it, e.g. "compositional_skills/writing/haiku/qna.yaml"
    rel: str  # its folder inside the taxonomy, "compositional_skills/writing/haiku": what datasets name it by
    kind: str  # "skill" or "knowledge"
    version: int
    created_by: str
    content_hash: str  # sha256 of the file's bytes: what caches key on
    task_description: str = ""  # as written: the prompts quote it verbatim
    seeds: tuple[QA, ...] = ()  # skills
    domain: str = ""
    document_outline: str = ""
    knowledge_seeds: tuple[KnowledgeSeed, ...] = ()
    document: DocumentRef | None = None
    foundational: bool = False

    @property
    def name(self) -> str:
        """A stable short name: the leaf's folders joined by '/' without the file name."""
        return str(Path(self.rel_path).parent)

    @property
    def slug(self) -> str:
        return self.rel.replace("/", ".")

    @property
    def is_knowledge(self) -> bool:
        return self.kind == "knowledge"

    @property
    def grounded(self) -> bool:
        return not self.is_knowledge and any(s.context is not None for s in self.seeds)

    @property
    def flow(self) -> str:
        """The pipeline flow that generates from this leaf."""
        if self.is_knowledge:
            return "knowledge"
        return "grounded_skill" if self.grounded else "freeform_skill"

    @property
    def columns(self) -> dict[str, Any]:
        """The leaf-level columns the pipeline steps read (a new dict each time: the leaf stays frozen)."""
        cols: dict[str, Any] = {"leaf": self.rel, "seed_examples": self.seed_rows()}
        if self.is_knowledge:
            cols.update(domain=self.domain, document_outline=self.document_outline)
        else:
            cols["task_description"] = self.task_description
        return cols

    def seed_rows(self) -> list[dict[str, str]]:
        """The seed examples as flat rows: question, answer and (grounded, knowledge) context."""
        if self.is_knowledge:
            return [{"context": s.context, "question": qa.question, "answer": qa.answer}
                    for s in self.knowledge_seeds for qa in s.qas]
        rows = []
        for qa in self.seeds:
            row = {"question": qa.question, "answer": qa.answer}
            if qa.context is not None:
                row["context"] = qa.context
            rows.append(row)
        return rows

    def cache_key(self, pipeline_hash: str, flow_settings: dict[str, Any]) -> str:
        blob = json.dumps([self.content_hash, self.flow, pipeline_hash, flow_settings], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def all_qas(self) -> list[QA]:
        """Every seed question/answer; knowledge pairs carry their context."""
        if not self.is_knowledge:
            return list(self.seeds)
        return [QA(qa.question, qa.answer, seed.context, qa.line) for seed in self.knowledge_seeds for qa in seed.qas]


def _folder(path: Path, root: Path | None) -> str:
    try:
        return path.parent.resolve().relative_to(root.resolve()).as_posix() if root else path.parent.name
    except ValueError:
        return path.parent.name


def _items(node: Node | None, key: str) -> list[Node]:
    """The items of the list under ``key`` (the last such key, as the loaded value has it)."""
    found = None
    if isinstance(node, MappingNode):
        for k, v in node.value:
            if isinstance(k, ScalarNode) and k.value == key:
                found = v
    return list(found.value) if isinstance(found, SequenceNode) else []


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _text(data: dict[str, Any], key: str) -> str:
    return str(data.get(key) or "")


def _knowledge_seeds(data: dict[str, Any], node: Node | None) -> tuple[KnowledgeSeed, ...]:
    seeds = []
    for ex, ex_node in zip(data.get("seed_examples") or [], _items(node, "seed_examples"), strict=True):
        pairs = zip(ex.get("questions_and_answers") or [], _items(ex_node, "questions_and_answers"), strict=True)
        seeds.append(KnowledgeSeed(str(ex.get("context", "")).strip(),
                                   tuple(QA(str(qa["question"]).strip(), str(qa["answer"]).strip(), line=_line(n))
                                         for qa, n in pairs), line=_line(ex_node)))
    return tuple(seeds)


def _skill_seeds(data: dict[str, Any], node: Node | None) -> tuple[QA, ...]:
    return tuple(QA(str(ex["question"]).strip(), str(ex["answer"]).strip(),
                    str(ex["context"]).strip() if ex.get("context") else None, _line(n))
                 for ex, n in zip(data.get("seed_examples") or [], _items(node, "seed_examples"), strict=True))


def leaf_from_tree(path: Path, root: Path | None, report: FileReport, node: Node | None) -> Leaf:
    """Build the leaf from a valid file's report and node tree (``None``: an empty file)."""
    raw = Path(path).read_bytes()
    data, _ = reader.to_python(node)
    data = data if isinstance(data, dict) else {}
    common = dict(path=Path(path).resolve(), rel_path=report.path, rel=_folder(Path(path), root),
                  kind="knowledge" if report.kind == "knowledge" else "skill", version=report.version or 1,
                  created_by=_text(data, "created_by").strip(), content_hash=hashlib.sha256(raw).hexdigest(),
                  foundational=report.foundational)
    if common["kind"] == "knowledge":
        doc = data.get("document") or {}
        return Leaf(**common, domain=_text(data, "domain"), document_outline=_text(data, "document_outline"),
                    knowledge_seeds=_knowledge_seeds(data, node),
                    document=DocumentRef(str(doc.get("repo", "")), str(doc.get("commit", "")),
                                         tuple(str(p) for p in doc.get("patterns") or [])))
    return Leaf(**common, task_description=_text(data, "task_description"), seeds=_skill_seeds(data, node))


def check_leaf(path: Path, root: Path | None = None) -> tuple[FileReport, Leaf | None]:
    """Validate one file; the leaf when it is valid and read (a misnamed qna.yml is neither)."""
    report, node = parse_file(Path(path), root)
    if not report.ok or report.skipped:
        return report, None
    return report, leaf_from_tree(Path(path), root, report, node)


def _check_one(args: tuple[str, str | None]) -> tuple[FileReport, Leaf | None]:
    path, root = args
    return check_leaf(Path(path), Path(root) if root else None)


def check_leaves(paths: Iterable[Path], root: Path | None = None,
                 jobs: int | None = None) -> list[tuple[FileReport, Leaf | None]]:
    """Validate many files and read the valid ones, in parallel when there are enough to pay for the processes."""
    paths = list(paths)
    jobs = jobs or os.cpu_count() or 1
    if jobs <= 1 or len(paths) < PARALLEL_THRESHOLD:
        return [check_leaf(p, root) for p in paths]
    import multiprocessing

    args = [(str(p), str(root) if root else None) for p in paths]
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        return pool.map(_check_one, args, chunksize=max(16, len(args) // (jobs * 8)))


def load_leaf(path: Path, taxonomy_root: Path | None = None) -> Leaf:
    """Validate and load one leaf; a UserError lists the validation errors."""
    report, leaf = check_leaf(path, taxonomy_root)
    if leaf is None:
        shown = "\n".join(f"  {report.path}:{m.line}:{m.column}: {m.message}"
                          for m in (report.errors or report.warnings)[:10])
        raise UserError(f"{report.path} is not a valid leaf:\n{shown}",
                        hint=f"run 'unfork taxonomy validate {path}' for every problem with hints")
    return leaf
