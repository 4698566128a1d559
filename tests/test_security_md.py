"""SECURITY.md names the tests that back each claim; every one must exist, so the document cannot drift."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SECURITY = ROOT / "SECURITY.md"
# tests/a/b.py::test_name or tests/a/b.py::TestClass::test_name (a [param] suffix is allowed)
REFERENCE = re.compile(r"\b(tests/[\w/.-]+\.py)((?:::\w+)+)(?:\[[^\]\s`]*\])?")
SECTIONS = ("a contribution's qna.yaml", "document repository", "pipeline folder", "run folder",
            "remote teacher", "model serve", "not protected", "reporting a vulnerability")


def references(text: str) -> list[tuple[str, list[str]]]:
    """Each ``(file, [names...])`` that ``text`` cites, in order, duplicates kept."""
    return [(m.group(1), m.group(2).split("::")[1:]) for m in REFERENCE.finditer(text)]


def defines(source: str, names: list[str]) -> bool:
    """Whether the module ``source`` defines ``names``: a test function, or a class holding the rest."""
    body = ast.parse(source).body
    for name in names[:-1]:
        cls = next((n for n in body if isinstance(n, ast.ClassDef) and n.name == name), None)
        if cls is None:
            return False
        body = cls.body
    return any(isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == names[-1] for n in body)


def missing_references(text: str, root: Path) -> list[str]:
    """The references in ``text`` whose file is not under ``root`` or does not define the test."""
    missing = []
    for file, names in references(text):
        path = root / file
        if not path.is_file() or not names[-1].startswith("test") or not defines(path.read_text(), names):
            missing.append("::".join([file, *names]))
    return missing


def test_every_test_security_md_names_exists():
    text = SECURITY.read_text(encoding="utf-8")
    assert len(references(text)) >= 30, "SECURITY.md should cite the tests behind its claims"
    assert missing_references(text, ROOT) == []


def test_security_md_covers_each_untrusted_input():
    headings = [line.lower() for line in SECURITY.read_text(encoding="utf-8").splitlines() if line.startswith("#")]
    for section in SECTIONS:
        assert any(section in h for h in headings), f"SECURITY.md has no section on {section!r}"


def test_each_untrusted_input_section_cites_a_test():
    text = SECURITY.read_text(encoding="utf-8")
    untrusted = text.split("## Untrusted inputs", 1)[1].split("\n## ", 1)[0]
    for section in re.split(r"\n### ", untrusted)[1:]:
        assert references(section), f"no test cited under '### {section.splitlines()[0]}'"


@pytest.mark.parametrize(("cited", "missing"), [
    ("`tests/t.py::test_there`", []),
    ("`tests/t.py::test_there[x-1]` and tests/t.py::Group::test_inside", []),
    ("`tests/t.py::test_gone`", ["tests/t.py::test_gone"]),
    ("`tests/t.py::helper`", ["tests/t.py::helper"]),
    ("`tests/t.py::Group::test_there`", ["tests/t.py::Group::test_there"]),
    ("`tests/nowhere.py::test_there`", ["tests/nowhere.py::test_there"]),
    ("`tests/t.py::not_a_test_there`", ["tests/t.py::not_a_test_there"]),
])
def test_the_check_finds_what_is_missing(tmp_path, cited, missing):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "t.py").write_text(
        "def test_there():\n    pass\n\n\ndef helper():\n    pass\n\n\n"
        "class Group:\n    def test_inside(self):\n        pass\n")
    assert missing_references(cited, tmp_path) == missing
