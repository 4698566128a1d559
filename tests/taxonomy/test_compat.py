"""Differential tests: our schema verdicts must equal InstructLab's own schema package's.

Mutations of valid documents (removed keys, wrong types, empty strings, too few
or duplicate examples, unknown keys, other versions) are validated by both; the
YAML lint part is compared separately in test_lint.py.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.taxonomy.qna_samples import dump, knowledge, skill
from unfork.taxonomy.validate import validate_file

schema_pkg = pytest.importorskip("instructlab.schema.taxonomy")


def instructlab_verdict(path: Path) -> bool:
    parser = schema_pkg.TaxonomyParser(schema_version=0, message_format="logging")
    parser._yamllint = lambda **_: None  # lint is compared on its own; avoid a process per file
    parser.yq_available = False
    return parser.parse(path).errors == 0


def our_verdict(path: Path) -> bool:
    return validate_file(path, path.parents[3], lint=False).ok


def _paths(doc):
    """Every (container, key) pair in the document, to pick a mutation target."""
    out = []
    stack = [doc]
    while stack:
        node = stack.pop()
        keys = list(node) if isinstance(node, dict) else range(len(node)) if isinstance(node, list) else []
        for k in keys:
            out.append((node, k))
            stack.append(node[k])
    return out


def mutate(doc, rng: random.Random):
    doc = copy.deepcopy(doc)
    for _ in range(rng.randint(1, 2)):
        targets = _paths(doc)
        if not targets:
            break
        container, key = rng.choice(targets)
        op = rng.choice(["delete", "empty", "int", "null", "list", "dup", "unknown", "version", "bool", "float"])
        if op == "delete":
            del container[key]
        elif op == "empty":
            container[key] = ""
        elif op == "int":
            container[key] = 7
        elif op == "null":
            container[key] = None
        elif op == "bool":
            container[key] = True
        elif op == "float":
            container[key] = 3.0
        elif op == "list":
            container[key] = [container[key]]
        elif op == "dup" and isinstance(container, list):
            container.append(copy.deepcopy(container[key]))
        elif op == "unknown" and isinstance(container, dict):
            container[rng.choice(["extra", "hint", "Question"])] = "x"
        elif op == "version":
            doc["version"] = rng.choice([1, 2, 3, 4, "3"])
    return doc


def base_docs(rng):
    return [skill(rng, version=1, n=2), skill(rng, version=2), skill(rng, version=3, grounded=True),
            knowledge(rng)]


@settings(max_examples=int(__import__("os").environ.get("COMPAT_EXAMPLES", "250")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 2**32 - 1), st.sampled_from(["compositional_skills", "knowledge", "foundational_skills"]))
def test_same_verdict_as_instructlab(tmp_path, seed, folder):
    rng = random.Random(seed)
    doc = mutate(rng.choice(base_docs(rng)), rng)
    path = tmp_path / folder / "area" / "leaf" / "qna.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump(doc))
    theirs = instructlab_verdict(path)
    ours = our_verdict(path)
    assert ours == theirs, (dump(doc), [str(m) for m in validate_file(path, lint=False).errors])


def test_public_taxonomy_examples_pass_both():
    root = Path(__file__).resolve().parents[3] / "shared" / "taxonomy-examples"
    if not root.is_dir():
        pytest.skip("../shared/taxonomy-examples is not beside this checkout")
    paths = sorted(root.rglob("qna.yaml"))
    assert paths
    for path in paths:
        report = validate_file(path, root, lint=False)
        assert report.ok, [str(m) for m in report.errors]
        assert instructlab_verdict(path)
