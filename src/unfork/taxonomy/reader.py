"""Reading a qna.yaml safely: size, encoding, symlinks, YAML syntax, alias bombs.

Everything a user can get wrong becomes a :class:`Message` with a position;
nothing here raises on bad input.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

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
        target = _link_out_of(path, root)
        if target is not None:
            return fail("read.symlink", f"symbolic link points outside the taxonomy, to {target}",
                        "replace the link with the file itself")
        size = path.stat().st_size
        if path.is_dir():
            return fail("read.not-a-file", "this is a folder, not a file",
                        "a leaf is a file named qna.yaml; rename the folder or move its files")
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
        if exc.errno == errno.ELOOP:
            return fail("read.symlink-loop", "symbolic links loop: following them never reaches a file",
                        "replace the link with the file itself")
        return fail("read.os", f"cannot read the file: {exc.strerror or exc}", "check its permissions")
    return decode(data)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _tree(path: Path) -> str:
    """The taxonomy a file's path names (above its outermost compositional_skills or knowledge folder), else its folder."""
    parts = Path(os.path.abspath(path)).parts[:-1]
    for i in range(1, len(parts)):
        if parts[i] in ("compositional_skills", "knowledge", "foundational_skills"):
            return str(Path(*parts[:i]))
    return os.path.dirname(os.path.abspath(path))


def _link_out_of(path: Path, root: Path | None) -> str | None:
    """Where ``path`` really leads when a link takes it out of the taxonomy, else ``None``.

    Only a link decides: a plain file named outside the taxonomy is read, and a
    link that stays inside keeps working. Raises ``OSError`` (ELOOP) for a loop.
    """
    tree = str(root) if root is not None else _tree(path)
    try:
        real = os.path.realpath(path, strict=True)
    except FileNotFoundError:
        real = os.path.realpath(path)  # a dangling link still says where it points
    real_tree = os.path.realpath(tree)
    if _inside(real, real_tree):
        return None
    where = os.path.abspath(path)
    if path.is_symlink() or _inside(where, os.path.abspath(tree)) or _inside(where, real_tree):
        return real
    return None


def _utf16(data: bytes) -> bool:
    """A byte order mark, or the NUL in every other byte that UTF-16 gives mostly-ASCII text."""
    if data.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return False  # UTF-32: binary enough to say so plainly
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return True
    head = data[:256] if len(data) % 2 == 0 else b""
    return len(head) >= 2 and (head[0::2].count(0) == len(head) // 2 or head[1::2].count(0) == len(head) // 2)


def decode(data: bytes) -> tuple[str | None, list[Message]]:
    if _utf16(data):
        return None, [Message(1, 1, "read.encoding", "the file is UTF-16 text; a qna.yaml must be UTF-8",
                              hint="save the file as UTF-8 (most editors have an 'encoding' menu)")]
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
    """Parse to a node tree that keeps positions, merge keys resolved. ``None`` for an empty document."""
    try:
        node = yaml.compose(text, Loader=_Loader)
        if "\t" in text and _Loader is not yaml.SafeLoader:
            # libyaml accepts some tabs (after a value, between tokens) that PyYAML's Python
            # scanner, and so InstructLab, rejects; files with tabs are rare, so check them twice.
            yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None and ("<<" in text or "merge" in text or "%" in text):  # ways to write a merge key
            Merger().resolve(node)
        return node, []
    except yaml.YAMLError as exc:
        return None, [syntax_message(exc, text)]
    except MergeError as exc:
        line, col = exc.node.start_mark.line + 1, exc.node.start_mark.column + 1
        return None, [Message(line, col, "yaml.merge", f"a merge key ('<<') needs {exc.args[0]}",
                              hint="merge a mapping (<<: *anchor) or a list of mappings (<<: [*a, *b])")]
    except AliasBomb:
        return None, [_bomb_message()]
    except (RecursionError, MemoryError):
        return None, [Message(1, 1, "yaml.syntax", "the YAML nests too deeply to be read",
                              hint="a qna.yaml needs only a few levels of nesting")]


MERGE = "tag:yaml.org,2002:merge"


class MergeError(Exception):
    def __init__(self, what: str, node: Node):
        super().__init__(what)
        self.node = node


@dataclass
class Merger:
    """Resolves ``<<`` merge keys in place, as PyYAML's safe loader (and so InstructLab) does.

    Each mapping is flattened once; a budget on the pairs copied stops a merge
    bomb before the lists grow. A merged mapping keeps one pair per key, the one
    PyYAML's dict keeps, so the checks see what InstructLab loads; PyYAML's own
    list, which later merges copy from, is kept aside.
    """

    budget: int = MAX_NODES
    pairs: dict[int, list[tuple[Node, Node]]] = field(default_factory=dict)

    def resolve(self, root: Node) -> None:
        stack, seen = [root], set()
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            # In document order, so an anchor is flattened before its aliases: no deep recursion.
            if isinstance(node, MappingNode):
                self.flatten(node)
                stack.extend(reversed([n for pair in node.value for n in pair]))
            elif isinstance(node, SequenceNode):
                stack.extend(reversed(node.value))

    def flatten(self, node: MappingNode) -> list[tuple[Node, Node]]:
        """PyYAML 6's SafeConstructor.flatten_mapping, step for step: the order decides which value wins."""
        if id(node) in self.pairs:
            return self.pairs[id(node)]
        self.pairs[id(node)] = node.value
        merge: list[tuple[Node, Node]] = []
        seen: set[int] = set()  # PyYAML skips a key it has merged already, by identity
        index, merged = 0, False
        while index < len(node.value):
            key, value = node.value[index]
            if key.tag != MERGE:
                index += 1
                continue
            merged = True
            del node.value[index]
            if isinstance(value, SequenceNode):
                subs = value.value
                bad = next((sub for sub in subs if not isinstance(sub, MappingNode)), None)
                if bad is not None:
                    raise MergeError(f"mappings in its list, not {_kind(bad)}", bad)
            elif isinstance(value, MappingNode):
                subs = [value]
            else:
                raise MergeError(f"a mapping or a list of mappings, not {_kind(value)}", value)
            for sub in subs:
                for pair in self.flatten(sub):
                    if id(pair[0].value) not in seen:
                        seen.add(id(pair[0].value))
                        self.take(merge, pair)
        if merged:
            self.pairs[id(node)] = merge + node.value
            node.value = _last_per_key(self.pairs[id(node)])
        return self.pairs[id(node)]

    def take(self, merge: list, pair: tuple[Node, Node]) -> None:
        self.budget -= 1
        if self.budget < 0:
            raise AliasBomb
        merge.append(pair)


def _kind(node: Node) -> str:
    return "a list" if isinstance(node, SequenceNode) else "a mapping" if isinstance(node, MappingNode) else "a scalar"


def _last_per_key(pairs: list[tuple[Node, Node]]) -> list[tuple[Node, Node]]:
    """One pair per key, in a dict's order: where the key first came, with its last value."""
    out: dict[Any, tuple[Node, Node]] = {}
    for key, value in pairs:
        k = _key(key)
        out[k] = (out[k][0] if k in out else key, value)
    return list(out.values())


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
    value = scalar(node) if isinstance(node, ScalarNode) else key_text(node)
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def key_text(node: Node, limit: int = 80) -> str:
    """A key as one line of flow YAML (``[a, b]``), cut at ``limit`` so aliases cannot make it huge."""
    out: list[str] = []
    size = 0
    stack: list[Node | str] = [node]
    while stack and size <= limit:
        item = stack.pop()
        if isinstance(item, str):
            piece = item
        elif isinstance(item, ScalarNode):
            plain = item.value and item.value.strip() == item.value and not any(c in item.value for c in ",[]{}:#'\"\n")
            piece = item.value if plain else json.dumps(item.value, ensure_ascii=False)
        elif isinstance(item, SequenceNode):
            parts: list[Node | str] = ["["]
            for i, child in enumerate(item.value):
                parts += [", "] * (i > 0) + [child]
            stack.extend(reversed([*parts, "]"]))
            continue
        else:
            parts = ["{"]
            for i, (k, v) in enumerate(item.value):
                parts += [", "] * (i > 0) + [k, ": ", v]
            stack.extend(reversed([*parts, "}"]))
            continue
        out.append(piece)
        size += len(piece)
    text = "".join(out)
    return text if size <= limit and not stack else text[:limit] + "..."


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
    except (yaml.YAMLError, ValueError, TypeError, IndexError, KeyError, AttributeError):  # '!!timestamp x' and such
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
        return None, [_bomb_message()]


def _bomb_message() -> Message:
    return Message(1, 1, "yaml.alias-bomb", f"aliases expand to more than {MAX_NODES:,} values (an 'alias bomb')",
                   hint="remove the &anchors and *aliases and write the values out")


def leaf_kind_from_path(path: Path) -> str | None:
    """'skill' or 'knowledge' from the nearest compositional_skills/knowledge folder, as InstructLab does."""
    for part in reversed(Path(os.path.abspath(path)).parts[:-1]):
        if part == "compositional_skills":
            return "skill"
        if part == "knowledge":
            return "knowledge"
    return None
