"""InstructLab's qna.yaml schemas (versions 1-3), checked on the node tree.

The rules are those of InstructLab's schema package (required fields, minimum
counts, unique examples, unknown keys rejected, non-empty strings, knowledge
only from version 3), but every message points at the offending node and says
how to fix it. Checking nodes directly is also what makes this fast. Two checks
are unfork's own (rules ``document.commit`` and ``document.repo``): values
InstructLab's schema accepts but data generation would refuse.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from unfork.taxonomy import reader
from unfork.taxonomy.messages import Message

SUPPORTED_VERSIONS = (1, 2, 3)


@dataclass(frozen=True)
class Str:
    min_length: int = 0


@dataclass(frozen=True)
class Int:
    const: int | None = None


@dataclass(frozen=True)
class Arr:
    items: object
    min_items: int = 0
    unique: bool = False


@dataclass(frozen=True)
class Obj:
    props: dict = field(default_factory=dict)
    required: tuple[str, ...] = ()
    closed: bool = True  # unknown keys are errors ("unevaluatedProperties": false)


_TEXT = Str(min_length=1)
_SKILL_EXAMPLE = Obj({"context": _TEXT, "question": _TEXT, "answer": _TEXT}, ("question", "answer"))


def _skill(version: int) -> Obj:
    if version == 1:
        return Obj({"version": Int(1), "created_by": _TEXT, "task_description": Str(),
                    "seed_examples": Arr(_SKILL_EXAMPLE, min_items=1)},
                   ("created_by", "task_description", "seed_examples"))
    return Obj({"version": Int(version), "created_by": _TEXT, "task_description": _TEXT,
                "seed_examples": Arr(_SKILL_EXAMPLE, min_items=5, unique=True)},
               ("version", "created_by", "task_description", "seed_examples"))


_KNOWLEDGE_V3 = Obj(
    {
        "version": Int(3),
        "created_by": _TEXT,
        "domain": _TEXT,
        "document_outline": _TEXT,
        "seed_examples": Arr(Obj({
            "context": _TEXT,
            "questions_and_answers": Arr(Obj({"question": _TEXT, "answer": _TEXT}, ("question", "answer"),
                                             closed=False), min_items=3, unique=True),
        }, ("context", "questions_and_answers")), min_items=5, unique=True),
        "document": Obj({"repo": _TEXT, "commit": _TEXT, "patterns": Arr(_TEXT, min_items=1, unique=True)},
                        ("repo", "commit", "patterns")),
    },
    ("version", "created_by", "domain", "seed_examples", "document", "document_outline"),
)

# What to write for a missing or empty field.
FIELD_HINTS = {
    "version": "add 'version: 3' at the top of the file",
    "created_by": "add 'created_by: <your GitHub username>'",
    "task_description": "add 'task_description: <one sentence saying what the skill teaches>'",
    "domain": "add 'domain: <a short subject such as a textbook chapter title>'",
    "document_outline": "add 'document_outline: <a one-sentence summary of the document>'",
    "document": "add a 'document:' section with 'repo', 'commit' and 'patterns'",
    "patterns": "list the document files, e.g. 'patterns: [\"*.md\"]'",
    "seed_examples": "add a 'seed_examples:' list",
    "question": "write the question after 'question:'",
    "answer": "write the expected answer after 'answer:'",
    "context": "paste the passage after 'context:'",
    "questions_and_answers": "add a 'questions_and_answers:' list of question/answer pairs",
}

ITEM_NAMES = {"seed_examples": "seed example", "questions_and_answers": "question/answer pair",
              "patterns": "pattern"}

_TYPE_NAMES = {reader.STR: "text", reader.INT: "a whole number", reader.FLOAT: "a number",
               reader.BOOL: "true/false", reader.NULL: "nothing (an empty value)"}


def schema_for(kind: str, version: int) -> Obj | None:
    if version not in SUPPORTED_VERSIONS:
        return None
    if kind == "knowledge":
        return _KNOWLEDGE_V3 if version == 3 else None
    return _skill(version)


def _pos(node: Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping (key: value pairs)"
    if isinstance(node, SequenceNode):
        return "a list"
    return _TYPE_NAMES.get(node.tag, node.tag)


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


@dataclass
class Checker:
    messages: list[Message] = field(default_factory=list)
    builder: reader.Builder = field(default_factory=reader.Builder)

    def error(self, node: Node, rule: str, path: str, message: str, hint: str) -> None:
        line, col = _pos(node)
        self.messages.append(Message(line, col, rule, message, yaml_path=path or ".", hint=hint))

    def check(self, node: Node, spec: object, path: str) -> None:
        if isinstance(spec, Obj):
            self.check_obj(node, spec, path)
        elif isinstance(spec, Arr):
            self.check_arr(node, spec, path)
        elif isinstance(spec, Str):
            self.check_str(node, spec, path)
        elif isinstance(spec, Int):
            self.check_int(node, spec, path)

    def check_type(self, node: Node, ok: bool, want: str, path: str) -> bool:
        if ok:
            return True
        field_name = path.rsplit(".", 1)[-1].split("[")[0]
        if isinstance(node, ScalarNode) and node.tag == reader.NULL:
            msg = f"'{path}' is empty; it must be {want}"
            hint = FIELD_HINTS.get(field_name, f"give '{field_name}' a value")
        else:
            msg = f"'{path}' must be {want}, not {_describe(node)}"
            hint = ("put the value in quotes to make it text" if want == "text" and isinstance(node, ScalarNode)
                    else f"write {want} here")
        self.error(node, "schema.type", path, msg, hint)
        return False

    def check_str(self, node: Node, spec: Str, path: str) -> None:
        if not self.check_type(node, isinstance(node, ScalarNode) and node.tag == reader.STR, "text", path):
            return
        if len(node.value) < spec.min_length:
            name = path.rsplit(".", 1)[-1].split("[")[0]
            self.error(node, "schema.empty", path, f"'{path}' must not be empty",
                       FIELD_HINTS.get(name, "write some text here"))

    def check_int(self, node: Node, spec: Int, path: str) -> None:
        # JSON Schema counts 3.0 as an integer, so InstructLab accepts 'version: 3.0'.
        value = reader.scalar(node) if isinstance(node, ScalarNode) else None
        whole = node.tag == reader.INT or (node.tag == reader.FLOAT and isinstance(value, float)
                                           and value.is_integer())
        if not self.check_type(node, whole, "a whole number", path):
            return
        if spec.const is not None and value != spec.const:
            self.error(node, "schema.const", path, f"'{path}' must be {spec.const} here, not {node.value}",
                       f"write 'version: {spec.const}'")

    def check_arr(self, node: Node, spec: Arr, path: str) -> None:
        if not self.check_type(node, isinstance(node, SequenceNode), "a list", path):
            return
        items = node.value
        if len(items) < spec.min_items:
            missing = spec.min_items - len(items)
            what = ITEM_NAMES.get(path.rsplit(".", 1)[-1].split("[")[0], "item")
            self.error(node, "schema.min-items", path,
                       f"'{path}' has {len(items)} item{'s' * (len(items) != 1)}; at least {spec.min_items} are required",
                       f"add {missing} more {what}{'s' * (missing != 1)}")
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            self.check(item, spec.items, _join(path, i))
            if spec.unique:
                key = self.canonical(item)
                if key in seen:
                    self.error(item, "schema.unique", _join(path, i),
                               f"'{_join(path, i)}' is the same as '{_join(path, seen[key])}'",
                               "remove the duplicate or change it into a different example")
                else:
                    seen[key] = i

    def canonical(self, node: Node) -> str:
        try:
            value = self.builder.value(node)
        except reader.AliasBomb:
            return f"@{id(node)}"
        try:
            return json.dumps(value, sort_keys=True, default=str)
        except (TypeError, ValueError):  # keys JSON cannot sort or write (0 beside '', a date): compare reprs
            return repr(value)

    def check_obj(self, node: Node, spec: Obj, path: str) -> None:
        if not self.check_type(node, isinstance(node, MappingNode), "a mapping of 'key: value' lines", path):
            return
        present: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key = str(reader.scalar(key_node)) if isinstance(key_node, ScalarNode) else reader.key_text(key_node)
            present[key] = key_node
            sub = spec.props.get(key)
            if sub is None:
                if spec.closed:
                    self.unknown_key(key_node, key, spec, path, present)
                continue
            self.check(value_node, sub, _join(path, key))
        for name in spec.required:
            if name not in present:
                where = f"'{path}'" if path else "the file"
                self.error(node, "schema.required", path, f"{where} is missing the required field '{name}'",
                           FIELD_HINTS.get(name, f"add '{name}:'"))

    def unknown_key(self, key_node: Node, key: str, spec: Obj, path: str, present: dict) -> None:
        options = [p for p in spec.props if p not in present]
        close = difflib.get_close_matches(key, options, n=1, cutoff=0.6)
        hint = (f"did you mean '{close[0]}'?" if close
                else f"allowed here: {', '.join(spec.props)}; remove '{key}'")
        self.error(key_node, "schema.unknown-key", _join(path, key), f"unknown field '{key}'", hint)


def check_document(root: Node, kind: str, version: int, builder: reader.Builder | None = None) -> list[Message]:
    """Schema messages for a parsed qna.yaml whose top level is a mapping."""
    if kind == "knowledge" and version in (1, 2):
        line, col = _version_pos(root)
        return [Message(line, col, "schema.version",
                        f"version {version} is not supported for knowledge; the minimum is 3",
                        yaml_path="version", hint="convert the file to version 3 (see docs/template_qna.yaml "
                        "in the InstructLab taxonomy): 'version: 3', contexts with questions_and_answers")]
    spec = schema_for(kind, version)
    if spec is None:
        line, col = _version_pos(root)
        return [Message(line, col, "schema.version",
                        f"unsupported version {version}; versions 1 to 3 are supported",
                        yaml_path="version", hint="use 'version: 3'")]
    checker = Checker(builder=builder or reader.Builder())
    checker.check(root, spec, "")
    if kind == "knowledge":
        checker.messages += document_source(root)
    return checker.messages


# What generation (unfork.documents.fetch) accepts; a test keeps the two in step.
_SHA = re.compile(r"[0-9a-fA-F]{4,64}")
# git's names for the file, git, ssh, http and https transports: the only ones generation lets git use.
GIT_SCHEMES = ("file", "git", "ssh", "git+ssh", "ssh+git", "http", "https")


def commit_problem(commit: str) -> str | None:
    if _SHA.fullmatch(commit.strip()):
        return None
    return f"'document.commit' must be a commit SHA (4 to 64 hexadecimal digits), not {commit!r}"


def repo_problem(repo: str) -> str | None:
    if "://" not in repo:
        return None  # a path (resolved against the taxonomy root) or git@host:path, both allowed
    scheme = repo.split("://", 1)[0]
    if scheme in GIT_SCHEMES:
        return None
    return (f"'document.repo' uses the transport '{scheme}', which data generation refuses; "
            f"allowed: {', '.join(GIT_SCHEMES)}")


def document_source(root: MappingNode) -> list[Message]:
    """Errors InstructLab's schema lets through but data generation would stop on, found here first."""
    doc = _last(root, "document")
    if not isinstance(doc, MappingNode):
        return []
    out = []
    for name, problem, hint in (
            ("commit", commit_problem, "pin the exact commit (git rev-parse HEAD prints it): a branch or tag can move"),
            ("repo", repo_problem, "use an https://, ssh:// or git@host:path URL, or a path inside the taxonomy")):
        node = _last(doc, name)
        text = problem(node.value) if isinstance(node, ScalarNode) and node.tag == reader.STR and node.value else None
        if text:
            line, col = _pos(node)
            out.append(Message(line, col, f"document.{name}", text, yaml_path=f"document.{name}", hint=hint))
    return out


def _last(node: MappingNode, key: str) -> Node | None:
    """The value under ``key``: the last one, as the loaded mapping has it."""
    found = None
    for k, v in node.value:
        if isinstance(k, ScalarNode) and k.value == key:
            found = v
    return found


def _version_pos(root: Node) -> tuple[int, int]:
    for key, value in root.value:
        if isinstance(key, ScalarNode) and key.value == "version":
            return _pos(value)
    return _pos(root)
