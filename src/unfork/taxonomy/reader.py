"""Reading a qna.yaml safely: size, encoding, symlinks, YAML syntax, alias bombs.

Everything a user can get wrong becomes a :class:`Message` with a position;
nothing here raises on bad input.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import Node, ScalarNode, SequenceNode

from unfork.taxonomy.messages import Message

MAX_BYTES = 1024 * 1024  # real leaves are a few KB; the largest public one is ~60 KB
MAX_NODES = 200_000  # expanded nodes; an alias bomb needs billions

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

STR = "tag:yaml.org,2002:str"
INT = "tag:yaml.org,2002:int"
FLOAT = "tag:yaml.org,2002:float"
BOOL = "tag:yaml.org,2002:bool"
NULL = "tag:yaml.org,2002:null"


def read_text(path: Path, root: Path | None = None) -> tuple[str | None, list[Message]]:
    """The file's text, or ``None`` with the reason."""

    def fail(rule: str, message: str, hint: str, line: int = 1, column: int = 1):
        return None, [Message(line, column, rule, message, hint=hint)]

    try:
        if root is not None and path.is_symlink():
            target = path.resolve()
            if not target.is_relative_to(root.resolve()):
                return fail("read.symlink", f"symbolic link points outside the taxonomy, to {target}",
                            "replace the link with the file itself")
        size = path.stat().st_size
        if not path.is_file():
            return fail("read.not-a-file", "not a regular file", "pass the path of a qna.yaml file")
        if size > MAX_BYTES:
            return fail("read.too-large", f"file is {size:,} bytes; the limit is {MAX_BYTES:,}",
                        "a qna.yaml holds a few seed examples; move long documents into the knowledge repo")
        with open(path, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return fail("read.missing", "file does not exist", "check the path")
    except OSError as exc:
        return fail("read.os", f"cannot read the file: {exc.strerror or exc}", "check its permissions")
    return decode(data)


def decode(data: bytes) -> tuple[str | None, list[Message]]:
    if b"\x00" in data:
        line = data.count(b"\n", 0, data.index(b"\x00")) + 1
        return None, [Message(line, 1, "read.binary", "file contains NUL bytes: it is binary, not YAML",
                              hint="a qna.yaml must be UTF-8 text")]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        return None, [Message(line, col, "read.encoding",
                              f"byte 0x{data[exc.start]:02x} is not valid UTF-8",
                              hint="save the file as UTF-8 (most editors have an 'encoding' menu)")]
    if text.startswith("\ufeff"):
        text = text[1:]
    return text, []


_SYNTAX_HINTS = (
    ("'\\t'", "YAML indentation must use spaces: replace the tab characters with spaces"),
    ("mapping values are not allowed", "a value contains ': '; put the value in quotes or use a block scalar (|)"),
    ("could not find expected ':'", "a key is missing its ':' or a multi-line value is not indented under its key"),
    ("found undefined alias", "remove the '*name' alias or define the '&name' anchor before it"),
    ("exceeded maximum nesting depth", "the file nests too deeply to be a qna.yaml (a few levels are enough)"),
    ("did not find expected key", "check the indentation of this line against the lines above it"),
    ("found character '`'", "a value cannot start with '`'; put it in quotes"),
    ("found character '@'", "a value cannot start with '@'; put it in quotes"),
    ("expected <document start>", "the file has text after the end of its top-level mapping; check the indentation"),
)


def syntax_message(exc: yaml.YAMLError, source: str = "") -> Message:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    text = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
    if mark is not None and source[mark.index:mark.index + 1] == "\t" and "tab" not in text:
        text += " (a tab character '\\t')"
    hint = next((h for key, h in _SYNTAX_HINTS if key in text),
                "check the quotes, colons and indentation around this position")
    return Message(line, col, "yaml.syntax", text, hint=hint)


def compose(text: str) -> tuple[Node | None, list[Message]]:
    """Parse to a node tree that keeps positions. ``None`` for an empty document."""
    try:
        node = yaml.compose(text, Loader=_Loader)
        if "\t" in text and _Loader is not yaml.SafeLoader:
            # libyaml accepts some tabs (after a value, between tokens) that PyYAML's Python
            # scanner, and so InstructLab, rejects; files with tabs are rare, so check them twice.
            yaml.compose(text, Loader=yaml.SafeLoader)
        return node, []
    except yaml.YAMLError as exc:
        return None, [syntax_message(exc, text)]
    except (RecursionError, MemoryError):
        return None, [Message(1, 1, "yaml.syntax", "the YAML nests too deeply to be read",
                              hint="a qna.yaml needs only a few levels of nesting")]


class AliasBomb(Exception):
    pass


class RecursiveAlias(AliasBomb):
    pass


@dataclass
class Builder:
    """Turns nodes into plain Python values.

    A budget on the *expanded* size stops alias bombs; a memo of built values
    keeps shared nodes cheap (and lets the schema's uniqueness check reuse
    them); an alias inside its own anchor is reported instead of recursing.
    """

    budget: int = MAX_NODES
    active: set[int] = field(default_factory=set)
    memo: dict[int, tuple[Any, int]] = field(default_factory=dict)

    def value(self, node: Node) -> Any:
        return self._build(node)[0]

    def _spend(self, n: int) -> None:
        self.budget -= n
        if self.budget < 0:
            raise AliasBomb

    def _build(self, node: Node) -> tuple[Any, int]:
        if isinstance(node, ScalarNode):
            self._spend(1)
            return scalar(node), 1
        key = id(node)
        if key in self.memo:
            value, size = self.memo[key]
            self._spend(size)
            return value, size
        if key in self.active:
            raise RecursiveAlias
        self.active.add(key)
        self._spend(1)
        size = 1
        try:
            if isinstance(node, SequenceNode):
                value = []
                for child in node.value:
                    v, n = self._build(child)
                    value.append(v)
                    size += n
            else:
                value = {}
                for k, child in node.value:
                    v, n = self._build(child)
                    value[_key(k)] = v
                    size += n
        finally:
            self.active.discard(key)
        self.memo[key] = (value, size)
        return value, size


def _key(node: Node) -> Any:
    value = scalar(node) if isinstance(node, ScalarNode) else repr(node.value)
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def scalar(node: ScalarNode) -> Any:
    """The value PyYAML's safe loader would give, for the tags a qna.yaml can hold."""
    tag = node.tag
    if tag == STR:
        return node.value
    try:
        if tag == INT:
            return yaml.load(node.value, Loader=_Loader) if not node.value.isdigit() else int(node.value)
        if tag == BOOL:
            return node.value.lower() in ("yes", "true", "on", "y")
        if tag == NULL:
            return None
        if tag == FLOAT:
            return float(yaml.load(node.value, Loader=_Loader))
        return yaml.load(yaml.serialize(node), Loader=_Loader)
    except (yaml.YAMLError, ValueError, TypeError):
        return node.value


def to_python(node: Node | None, builder: Builder | None = None) -> tuple[Any, list[Message]]:
    if node is None:
        return None, []
    try:
        return (builder or Builder()).value(node), []
    except RecursiveAlias:
        return None, [Message(1, 1, "yaml.recursive-alias", "an alias refers to the value that contains it",
                              hint="remove the *alias inside its own &anchor")]
    except AliasBomb:
        return None, [Message(1, 1, "yaml.alias-bomb",
                              f"aliases expand to more than {MAX_NODES:,} values (an 'alias bomb')",
                              hint="remove the &anchors and *aliases and write the values out")]


def leaf_kind_from_path(path: Path) -> str | None:
    """'skill' or 'knowledge' from the nearest compositional_skills/knowledge folder, as InstructLab does."""
    for part in reversed(Path(os.path.abspath(path)).parts[:-1]):
        if part == "compositional_skills":
            return "skill"
        if part == "knowledge":
            return "knowledge"
    return None
