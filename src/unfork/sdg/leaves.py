"""Taxonomy leaves as the pipelines see them: kind, columns, content hash, cache key."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class Leaf:
    path: Path  # the qna.yaml
    rel: str  # its folder, relative to the taxonomy root: "compositional_skills/writing/freeform/haiku"
    flow: str  # "freeform_skill", "grounded_skill" or "knowledge"
    data: dict[str, Any]
    content_hash: str
    columns: dict[str, Any] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return self.rel.replace("/", ".")

    @property
    def is_knowledge(self) -> bool:
        return self.flow == "knowledge"

    def cache_key(self, pipeline_hash: str, flow_settings: dict[str, Any]) -> str:
        blob = json.dumps([self.content_hash, self.flow, pipeline_hash, flow_settings], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]


def seed_rows(data: dict[str, Any], flow: str) -> list[dict[str, str]]:
    """The seed examples as flat rows: question, answer and (grounded, knowledge) context."""
    rows = []
    for ex in data.get("seed_examples") or []:
        if flow == "knowledge":
            for qa in ex.get("questions_and_answers") or []:
                rows.append({"context": str(ex.get("context", "")).strip(), "question": str(qa["question"]).strip(),
                             "answer": str(qa["answer"]).strip()})
        else:
            row = {"question": str(ex["question"]).strip(), "answer": str(ex["answer"]).strip()}
            if ex.get("context"):
                row["context"] = str(ex["context"]).strip()
            rows.append(row)
    return rows


def read_leaf(path: Path, root: Path) -> Leaf:
    """Read a validated qna.yaml (``unfork.taxonomy.validate`` has accepted it)."""
    raw = path.read_bytes()
    data = yaml.safe_load(raw.decode("utf-8-sig")) or {}
    try:
        rel = path.parent.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        rel = path.parent.name
    if rel.split("/")[0] == "knowledge":
        flow = "knowledge"
    else:
        flow = "grounded_skill" if any(ex.get("context") for ex in data.get("seed_examples") or []) \
            else "freeform_skill"
    leaf = Leaf(path, rel, flow, data, hashlib.sha256(raw).hexdigest())
    leaf.columns = {"leaf": rel, "seed_examples": seed_rows(data, flow)}
    if flow == "knowledge":
        leaf.columns.update(domain=str(data.get("domain") or ""),
                            document_outline=str(data.get("document_outline") or ""))
    else:
        leaf.columns["task_description"] = str(data.get("task_description") or "")
    return leaf


def load_documents(leaf: Leaf, root: Path, cache_dir: Path | None = None) -> list[Any]:
    """Fetch a knowledge leaf's documents (``document.repo`` at ``document.commit``)."""
    from unfork.sdg.documents import fetch_documents

    doc = leaf.data.get("document") or {}
    return fetch_documents(str(doc.get("repo", "")), str(doc.get("commit", "")), [str(p) for p in doc.get("patterns") or []],
                           taxonomy_root=root, cache_dir=cache_dir)
