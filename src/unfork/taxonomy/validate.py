"""Validate qna.yaml leaves: read → parse → lint → schema → size advice.

The acceptance rules are InstructLab's; see :mod:`unfork.taxonomy.schema` and
:mod:`unfork.taxonomy.lint`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from unfork.taxonomy import reader, schema
from unfork.taxonomy.messages import FileReport, Message

LEAF_NAME = "qna.yaml"
# Limits InstructLab documents for contributors but never checks.
MAX_CONTEXT_WORDS = 500
MAX_QA_WORDS = 250
MAX_SKILL_WORDS = 2300
PARALLEL_THRESHOLD = 400  # below this, a process pool costs more than it saves


def is_misnamed(path: Path) -> bool:
    """qna.yml, QNA.yaml, Qna.YML ...: looks like a leaf but InstructLab would not read it."""
    name = path.name
    return name != LEAF_NAME and name.lower() in ("qna.yaml", "qna.yml")


@functools.lru_cache(maxsize=64)
def _bases(root: str | None, cwd: str) -> tuple[str, ...]:
    roots = [os.path.abspath(root), os.path.realpath(root)] if root else []
    return tuple(dict.fromkeys([*roots, cwd, os.path.realpath(cwd)]))


def display_path(path: Path, root: Path | None) -> str:
    """Relative to the taxonomy root when inside it, else to the working folder, else absolute."""
    bases = _bases(str(root) if root is not None else None, os.getcwd())
    for candidate in (os.path.abspath(path), None):
        candidate = candidate or os.path.realpath(path)  # only when the cheap test failed
        for base in bases:
            if candidate.startswith(base.rstrip(os.sep) + os.sep):
                return candidate[len(base.rstrip(os.sep)) + 1:]
    return str(path)


def file_kind(path: Path, root: Node | None) -> str:
    """InstructLab's rule: the nearest compositional_skills/knowledge folder; else a 'document' key."""
    kind = reader.leaf_kind_from_path(path)
    if kind:
        return kind
    if isinstance(root, MappingNode) and any(
            isinstance(k, ScalarNode) and k.value == "document" for k, _ in root.value):
        return "knowledge"
    return "skill"


def file_version(root: MappingNode) -> int:
    """InstructLab's rule: the 'version' value, int() of it if possible, else 1."""
    for key, value in root.value:
        if isinstance(key, ScalarNode) and key.value == "version" and isinstance(value, ScalarNode):
            v = reader.scalar(value)
            if isinstance(v, bool):
                return 1
            try:
                return int(v)
            except (TypeError, ValueError, OverflowError):  # OverflowError: .inf, which InstructLab crashes on
                return 1
    return 1


def validate_file(path: Path, root: Path | None = None, text: str | None = None, lint: bool = True) -> FileReport:
    return parse_file(path, root, text, lint)[0]


def parse_file(path: Path, root: Path | None = None, text: str | None = None,
               lint: bool = True) -> tuple[FileReport, Node | None]:
    """The report and the node tree it checked, so a valid leaf is not parsed a second time."""
    report = FileReport(path=display_path(path, root))
    report.foundational = "foundational_skills" in Path(os.path.abspath(path)).parts
    if is_misnamed(path):
        report.skipped = True
        report.add(Message(1, 1, "file.name", f"'{path.name}' is not read: a leaf must be named exactly "
                           f"'{LEAF_NAME}'", severity="warning", hint=f"rename it to {LEAF_NAME}"))
        return report, None
    if text is None:
        text, problems = reader.read_text(path, root)
        if text is None:
            report.errors.extend(problems)
            return report, None
    node = check_text(text, path, report, lint=lint)
    report.sort()
    return report, node


def check_text(text: str, path: Path, report: FileReport, lint: bool = True) -> Node | None:
    node, problems = reader.compose(text)
    report.kind = file_kind(path, node)
    if problems:  # lint findings would only repeat the syntax error; they come once it is fixed
        report.errors.extend(problems)
        return
    if node is None or (isinstance(node, ScalarNode) and node.value == "" and node.tag == reader.NULL):
        report.add(Message(1, 1, "file.empty", "the file is empty", severity="warning",
                           hint="fill it in from the template (docs/template_qna.yaml)"))
        return
    if not isinstance(node, MappingNode):
        report.add(Message(node.start_mark.line + 1, node.start_mark.column + 1, "schema.type",
                           "the top level must be a mapping of 'key: value' lines, "
                           f"not {schema._describe(node)}", yaml_path=".",
                           hint="start the file with 'version: 3' and the other fields at column 1"))
        return
    report.version = file_version(node)
    if report.version > 1 and lint:  # InstructLab lints only version 2 and up
        _lint(text, report)
    else:
        _duplicate_keys(node, report)
    builder = reader.Builder()
    _, bomb = reader.to_python(node, builder)
    if bomb:
        report.errors.extend(bomb)
        return
    for msg in schema.check_document(node, report.kind, report.version, builder):
        report.add(msg)
    _size_advice(node, report)
    return node


def _lint(text: str, report: FileReport) -> None:
    from unfork.taxonomy.lint import lint_text

    report.errors.extend(lint_text(text))


def _duplicate_keys(node: Node, report: FileReport) -> None:
    """Version 1 files are not linted by InstructLab, so a duplicate key is only a warning there."""
    for mapping in _walk(node):
        if not isinstance(mapping, MappingNode):
            continue
        seen: set[str] = set()
        for key, _ in mapping.value:
            if isinstance(key, ScalarNode):
                if key.value in seen:
                    report.add(Message(key.start_mark.line + 1, key.start_mark.column + 1, "yaml.duplicate-key",
                                       f"key '{key.value}' appears twice in this mapping; the last one wins",
                                       severity="warning", hint="remove or rename one of them"))
                seen.add(key.value)


def _walk(node: Node) -> Iterator[Node]:
    stack, seen = [node], set()
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        yield n
        if isinstance(n, SequenceNode):
            stack.extend(n.value)
        elif isinstance(n, MappingNode):
            for k, v in n.value:
                stack.extend((k, v))


def _get(node: Node, key: str) -> Node | None:
    if isinstance(node, MappingNode):
        for k, v in node.value:
            if isinstance(k, ScalarNode) and k.value == key:
                return v
    return None


def _words(node: Node | None) -> int:
    return len(node.value.split()) if isinstance(node, ScalarNode) and node.tag == reader.STR else 0


def _size_advice(root: MappingNode, report: FileReport) -> None:
    def warn(node: Node, path: str, what: str, count: int, limit: int) -> None:
        report.add(Message(node.start_mark.line + 1, node.start_mark.column + 1, f"size.{what}-words",
                           f"{what} has {count} words; InstructLab recommends at most {limit}",
                           severity="warning", yaml_path=path,
                           hint="shorter seeds fit the teacher's context and give better synthetic data"))

    seeds = _get(root, "seed_examples")
    if not isinstance(seeds, SequenceNode):
        return
    total = _words(_get(root, "task_description"))
    for i, seed in enumerate(seeds.value):
        ctx = _get(seed, "context")
        if _words(ctx) > MAX_CONTEXT_WORDS:
            warn(ctx, f"seed_examples[{i}].context", "context", _words(ctx), MAX_CONTEXT_WORDS)
        total += _words(ctx)
        pairs = [(f"seed_examples[{i}]", seed)]
        qas = _get(seed, "questions_and_answers")
        if isinstance(qas, SequenceNode):
            pairs = [(f"seed_examples[{i}].questions_and_answers[{j}]", qa) for j, qa in enumerate(qas.value)]
        for path, pair in pairs:
            for field in ("question", "answer"):
                node = _get(pair, field)
                n = _words(node)
                total += n
                if n > MAX_QA_WORDS:
                    warn(node, f"{path}.{field}", field, n, MAX_QA_WORDS)
    if report.kind == "skill" and total > MAX_SKILL_WORDS:
        report.add(Message(1, 1, "size.file-words",
                           f"the skill file has {total} words of examples; InstructLab recommends at most "
                           f"{MAX_SKILL_WORDS}", severity="warning",
                           hint="keep 5 to 15 short, varied seed examples"))


def _validate_one(args: tuple[str, str | None]) -> FileReport:
    path, root = args
    return validate_file(Path(path), Path(root) if root else None)


def validate_files(paths: Iterable[Path], root: Path | None = None, jobs: int | None = None) -> list[FileReport]:
    """Validate many files, in parallel when there are enough to pay for the processes."""
    paths = list(paths)
    jobs = jobs or os.cpu_count() or 1
    if jobs <= 1 or len(paths) < PARALLEL_THRESHOLD:
        return [validate_file(p, root) for p in paths]
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    args = [(str(p), str(root) if root else None) for p in paths]
    with ctx.Pool(jobs) as pool:
        return pool.map(_validate_one, args, chunksize=max(16, len(args) // (jobs * 8)))
