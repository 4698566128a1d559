"""The dataset folder: per-leaf files, train/test splits in chat format, the mixing recipe, the manifest.

Layout of ``<datasets dir>/<timestamp>/``::

    leaves/<leaf>/accepted.jsonl   rows as the pipeline produced them (scores, trace keys)
    leaves/<leaf>/rejected.jsonl   every rejection: step, reason, raw teacher text
    train_knowledge.jsonl          phase 1 of training: knowledge, plain Q&A, RAFT-style and passages
    train_skills.jsonl             phase 2: skills
    train_all.jsonl                both
    test_knowledge.jsonl, test_skills.jsonl, test_all.jsonl   the seed examples
    mix_recipe.yaml                what went into each training file, in what proportion
    manifest.json                  settings, hashes, teacher, pipeline, counts; written last, it marks the folder done

The names are :class:`unfork.contracts.DatasetFolder`'s. Every line of the train and test files is
``{"messages": [...], "metadata": {...}}``.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

from unfork.contracts import PHASES, DatasetFolder, DatasetManifest
from unfork.fsio import atomic_write_lines, atomic_write_text, ensure_folder
from unfork.sdg.engine import LeafResult
from unfork.sdg.pipeline import Pipeline

RAFT_INTRO = "Answer the question using the documents below; some of them may be unrelated to it."


def user_text(flow: str, row: dict[str, Any]) -> str:
    if flow == "grounded_skill" and row.get("context"):
        return f"{row['context'].strip()}\n\n{row['question'].strip()}"
    return row["question"].strip()


def chat_line(system: str, user: str, assistant: str, metadata: dict[str, Any]) -> dict[str, Any]:
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": assistant.strip()}]
    return {"messages": messages, "metadata": metadata}


def raft_user(question: str, chunk: str, distractors: list[str], rng: random.Random) -> str:
    docs = [chunk, *distractors]
    rng.shuffle(docs)
    body = "\n\n".join(f"[Document {i}]\n{d.strip()}" for i, d in enumerate(docs, start=1))
    return f"{RAFT_INTRO}\n\n{body}\n\nQuestion: {question.strip()}"


def passages(chunks: list[str], min_words: int = 8) -> list[tuple[str, str]]:
    """The documents' paragraphs, each with the heading path above it (overlapping chunks repeat none)."""
    out: dict[str, str] = {}
    for chunk in chunks:
        headings: list[tuple[int, str]] = []
        for block in chunk.split("\n\n"):
            block = block.strip()
            if block.startswith("#"):
                for line in block.splitlines():
                    level = len(line) - len(line.lstrip("#"))
                    headings = [h for h in headings if h[0] < level] + [(level, line.lstrip("#").strip())]
            elif len(block.split()) >= min_words:
                out.setdefault(" ".join(block.split()), " / ".join(h for _, h in headings))
    return [(heading, text) for text, heading in out.items()]


def passage_lines(result: LeafResult, system: str, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Each paragraph of the leaf's documents as an answer, so the student reads the facts themselves.

    Generated questions cover only some facts and a small teacher gets some
    wrong; the document's own text is always right (like InstructLab's
    document-based knowledge samples, without a teacher request).
    """
    domain = str(result.leaf.columns.get("domain") or "the document")
    found = passages(list(result.extra.get("chunks") or []))
    per_topic = Counter(heading for heading, _ in found)
    seen: Counter = Counter()
    lines = []
    for heading, text in found:
        seen[heading] += 1
        # One prompt per paragraph: several answers to one prompt would teach their average.
        part = f" (part {seen[heading]} of {per_topic[heading]})" if per_topic[heading] > 1 else ""
        prompt = f"What does the document about {domain} say about {heading or domain}{part}?"
        lines.append(chat_line(system, prompt, text, {**meta, "format": "passage"}))
    return lines


def judge_columns(pipeline: Pipeline, flow: str) -> list[str]:
    return [s.writes[0] for s in pipeline.flows[flow].steps if s.type == "judge" and s.writes]


def train_lines(result: LeafResult, pipeline: Pipeline, teacher: str, other_chunks: list[str],
                seed: int) -> list[dict[str, Any]]:
    """A leaf's accepted rows as chat samples (knowledge: plain and RAFT-style)."""
    flow = result.leaf.flow
    mix = pipeline.mix
    system = str(mix.get("system_prompt", ""))
    scores_cols = judge_columns(pipeline, flow)
    rng = random.Random(f"{seed}:{result.leaf.content_hash}")
    chunks = list(dict.fromkeys(result.extra.get("chunks") or
                                [a["row"].get("chunk", "") for a in result.accepted if a["row"].get("chunk")]))
    out = []
    raft_every = spread(len(result.accepted), float(mix.get("raft_share", 1.0)))
    for i, sample in enumerate(result.accepted):
        row = sample["row"]
        meta = {"leaf": result.leaf.rel, "pipeline": pipeline.name, "teacher": teacher,
                "scores": {c: row[c] for c in scores_cols if c in row}, "kind": flow}
        if flow != "knowledge" or mix.get("knowledge_plain", True):
            out.append(chat_line(system, user_text(flow, row), row["answer"], {**meta, "format": "qa"}))
        if flow == "knowledge" and mix.get("knowledge_raft", True) and i in raft_every:
            pool = [c for c in chunks + other_chunks if c != row["chunk"]]
            k = min(int(mix.get("raft_distractors", 1)), len(pool))
            distractors = rng.sample(pool, k)
            out.append(chat_line(system, raft_user(row["question"], row["chunk"], distractors, rng), row["answer"],
                                 {**meta, "format": "raft", "distractors": k}))
    if flow == "knowledge" and mix.get("knowledge_passages", False):
        out += passage_lines(result, system, {"leaf": result.leaf.rel, "pipeline": pipeline.name, "teacher": "document",
                                              "scores": {}, "kind": flow})
    return out


def spread(n: int, share: float) -> set[int]:
    """``round(n * share)`` of the indices ``0..n-1``, evenly spread (no randomness, so reruns agree)."""
    share = min(max(share, 0.0), 1.0)
    return {i for i in range(n) if int((i + 1) * share + 0.5) > int(i * share + 0.5)}


def test_lines(result: LeafResult, pipeline: Pipeline) -> list[dict[str, Any]]:
    flow = result.leaf.flow
    system = str(pipeline.mix.get("system_prompt", ""))
    meta = {"leaf": result.leaf.rel, "pipeline": pipeline.name, "teacher": "seed", "scores": {}, "kind": flow}
    return [chat_line(system, user_text(flow, ex), ex["answer"], {**meta, "format": "seed"})
            for ex in result.leaf.columns.get("seed_examples") or []]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    ensure_folder(path.parent)
    atomic_write_lines(path, [json.dumps(r, ensure_ascii=False) for r in rows])


def write_dataset(out: Path, results: list[LeafResult], pipeline: Pipeline, *, teacher: str, seed: int,
                  settings: dict[str, Any], stats: dict[str, Any]) -> DatasetManifest:
    """Write every file of the dataset folder, the manifest last; return the manifest."""
    import yaml

    folder = DatasetFolder(out)
    out.mkdir(parents=True, exist_ok=True)
    all_chunks = {r.leaf.rel: list(r.extra.get("chunks") or []) for r in results if r.leaf.is_knowledge}
    train: dict[str, list[dict[str, Any]]] = {"knowledge": [], "skills": []}
    test: dict[str, list[dict[str, Any]]] = {"knowledge": [], "skills": []}
    leaves = []
    for res in results:
        res.accepted.sort(key=lambda r: r.get("unit", 0))  # completion order varies; unit order does not
        res.rejected.sort(key=lambda r: r.get("unit", 0))
        phase = "knowledge" if res.leaf.is_knowledge else "skills"
        others = [c for rel, cs in all_chunks.items() if rel != res.leaf.rel for c in cs]
        lines = train_lines(res, pipeline, teacher, others, seed)
        leaf_dir = folder.leaf_dir(res.leaf.slug)
        _write_jsonl(leaf_dir / "accepted.jsonl", res.accepted)
        _write_jsonl(leaf_dir / "rejected.jsonl", res.rejected)
        _write_jsonl(leaf_dir / "train.jsonl", lines)
        train[phase] += lines
        test[phase] += test_lines(res, pipeline)
        leaves.append({
            "leaf": res.leaf.rel, "flow": res.leaf.flow, "phase": phase, "content_hash": res.leaf.content_hash,
            "cache_key": res.key, "reused": res.reused, "error": res.error, "units": res.units,
            "accepted": len(res.accepted), "rejected": len(res.rejected), "train_samples": len(lines),
            "test_samples": len(res.leaf.columns.get("seed_examples") or []),
            "requests": res.requests, "replayed_requests": res.replayed,
            "rejected_by_reason": dict(res.reasons().most_common()),
        })
    files = {}
    for split, groups in (("train", train), ("test", test)):
        name = folder.train_name if split == "train" else folder.test_name
        for phase in PHASES:
            _write_jsonl(out / name(phase), groups[phase])
            files[name(phase)] = len(groups[phase])
        combined = groups["knowledge"] + groups["skills"]
        _write_jsonl(out / name("all"), combined)
        files[name("all")] = len(combined)
    recipe = mix_recipe(train)
    atomic_write_text(
        folder.mix_recipe_path,
        "# What went into each training file, and in what proportion (written by unfork data generate).\n"
        + yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True))
    manifest = DatasetManifest(
        pipeline={"name": pipeline.name, "folder": str(pipeline.folder), "hash": pipeline.hash, "mix": pipeline.mix},
        teacher=teacher, seed=seed, settings=settings, leaves=leaves, files=files,
        phases={"1": DatasetFolder.TRAIN_KNOWLEDGE, "2": DatasetFolder.TRAIN_SKILLS}, stats=stats)
    folder.write_manifest(manifest)
    return manifest


def mix_recipe(train: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    def sources(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        counts = Counter((r["metadata"]["leaf"], r["metadata"].get("format", "qa")) for r in rows)
        total = sum(counts.values()) or 1
        return [{"leaf": leaf, "format": fmt, "samples": n, "fraction": round(n / total, 4)}
                for (leaf, fmt), n in sorted(counts.items())]

    all_rows = train["knowledge"] + train["skills"]
    return {
        DatasetFolder.TRAIN_KNOWLEDGE: {"phase": 1, "samples": len(train["knowledge"]),
                                        "sources": sources(train["knowledge"])},
        DatasetFolder.TRAIN_SKILLS: {"phase": 2, "samples": len(train["skills"]), "sources": sources(train["skills"])},
        DatasetFolder.TRAIN_ALL: {"samples": len(all_rows), "sources": sources(all_rows)},
    }


def list_datasets(root: Path) -> list[dict[str, Any]]:
    """Each dataset folder under ``root`` with its manifest's counts, newest first."""
    out = []
    if not root.is_dir():
        return out
    for path in sorted((p for p in root.iterdir() if p.is_dir()), reverse=True):
        m = DatasetFolder(path).read_manifest()
        if m is None or not m.complete:  # not a dataset, or one still being written
            continue
        d = DatasetFolder
        out.append({"name": path.name, "path": str(path), "pipeline": m.pipeline.get("name"),
                    "teacher": m.teacher, "leaves": len(m.leaves),
                    "train": m.count(d.TRAIN_ALL), "test": m.count(d.TEST_ALL),
                    "knowledge": m.count(d.TRAIN_KNOWLEDGE), "skills": m.count(d.TRAIN_SKILLS)})
    return out
