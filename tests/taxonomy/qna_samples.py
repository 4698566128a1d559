"""Builders of qna.yaml documents for tests and the benchmark corpus."""

from __future__ import annotations

import random

import yaml

WORDS = ("river stone lantern quiet harbor maple copper orbit velvet signal meadow ember glacier "
         "thistle canyon prism falcon harvest marble summit").split()


def sentence(rng: random.Random, n: int = 8) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def skill(rng: random.Random, version: int = 3, n: int = 5, grounded: bool = False) -> dict:
    doc: dict = {}
    if version > 1:
        doc["version"] = version
    doc["task_description"] = sentence(rng)
    doc["created_by"] = rng.choice(["alice", "bob", "carol"])
    seeds = []
    for i in range(n):
        seed = {"question": f"{sentence(rng)} ({i})", "answer": sentence(rng, 12)}
        if grounded:
            seed = {"context": sentence(rng, 30), **seed}
        seeds.append(seed)
    doc["seed_examples"] = seeds
    return doc


def knowledge(rng: random.Random, n: int = 5, qa: int = 3) -> dict:
    return {
        "version": 3,
        "domain": rng.choice(["history", "geography", "biology"]),
        "created_by": "dana",
        "document_outline": sentence(rng),
        "seed_examples": [
            {"context": sentence(rng, 40),
             "questions_and_answers": [{"question": f"{sentence(rng)} ({i}.{j})", "answer": sentence(rng)}
                                       for j in range(qa)]}
            for i in range(n)
        ],
        "document": {"repo": "https://example.com/docs.git", "commit": "0123abcd", "patterns": ["*.md"]},
    }


def dump(doc) -> str:
    """YAML as contributors write it: block style, 2-space indents, '- ' inside mappings."""
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=80, indent=2)
