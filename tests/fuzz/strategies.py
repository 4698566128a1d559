"""Hypothesis strategies for the files and values a user or a contribution hands unfork.

Shared by the fuzz tests (a small budget) and ``bench/fuzz.py`` (a large one).
Each strategy mixes well-formed input with hostile pieces, because a crash hides
behind a file that is almost right more often than behind pure noise.
"""

from __future__ import annotations

import json
import re

import yaml
from hypothesis import strategies as st

from unfork import config as C

# ---------------------------------------------------------------- scalars

# Text that YAML, JSON, terminals or file systems treat specially.
TRICKY_TEXT = [
    "", " ", "\x00", "\ufeff", "\x1b[31mred\x1b[0m", "\u202e", "\r", "\r\n", "\x85", "\u2028", "\t",
    "\ud800", "\udcff", "\U0010ffff", ".inf", "-.inf", ".nan", "1e400", "0x1F", "0o17", "1_000", "~", "null",
    "yes", "no", "on", "2024-02-30", "!!python/object:os.system", "*a", "&a", "<<", "%YAML 1.1", "---", "...",
    "{", "[", "'", '"', "#", ": ", "- ", "? ", "|", ">", "{{ x.__class__ }}", "../../etc/passwd", "/dev/zero",
    "9" * 5000, "a" * 20_000, "word " * 3000,
]

# All of Unicode, lone surrogates included: PyYAML's escapes and Python's surrogateescape produce them.
any_char = st.characters(exclude_categories=())

def pick(items: list):
    """One of ``items``, drawn by index so a failure report does not print the whole list."""
    return st.integers(0, len(items) - 1).map(items.__getitem__)


hostile_text = st.one_of(
    pick(TRICKY_TEXT),
    st.text(any_char, max_size=40),
    st.builds(lambda a, b, c: a + b + c, st.text(max_size=10), pick(TRICKY_TEXT), st.text(max_size=10)),
)
hostile_number = st.one_of(
    st.integers(), st.integers(min_value=2 ** 63 - 2, max_value=2 ** 200), st.integers(max_value=-(2 ** 63)),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0, -1, 1, 2 ** 32, 1e308, -0.0]),
)
hostile_scalar = st.one_of(hostile_text, hostile_number, st.booleans(), st.none(), st.binary(max_size=20),
                           st.dates())
hostile_value = st.recursive(hostile_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(hostile_text, st.integers()), inner, max_size=4)),
    max_leaves=12)

# Raw YAML put where a value goes: tags, anchors and aliases, merge keys, bombs, block scalars.
RAW_FRAGMENTS = [
    "!!python/object/apply:os.system ['echo pwned']", "!!python/name:os.system", "!!binary aGVsbG8=",
    "!!set {a, b}", "!!omap [a: 1]", "!!timestamp 2001-12-14", "!custom x", "!!int x", "!!float abc",
    "&anchor value", "*anchor", "*undefined", "&r [*r]", "{<<: {a: 1}, b: 2}", "{<<: [*anchor]}",
    "&a [&b [&c [x, x], *c], *b]", "|\n  block\n  text", ">-\n  folded", "|0\n  bad indicator", "[a, [b, {c: d}]]",
    "{? [complex]: key}", ".inf", ".nan", "0b101", "12:30:00", "'unterminated", '"\\ud800"', '"\\x00\\u2028"',
    "\t tab", "@reserved", "`backtick", "- dash", "%TAG ! tag:x,2002:", "!!int", "!!float _", "!!bool x",
    "!!timestamp x", "!!int 0x", "!!binary é", "!!null x", "!!str", "!!map [a]", "!!seq {a: b}",
]
# A list under a key whose last item expands to 9**9 strings: read naively, it takes gigabytes.
ALIAS_BOMB = "  - &l0 [lol]\n" + "".join(f"  - &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10))


def dump(doc: object, flow: bool | None = None) -> str:
    """YAML of a Python value; values PyYAML cannot represent become their repr."""
    try:
        return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=flow, width=80)
    except yaml.YAMLError:
        return yaml.safe_dump(repr(doc), allow_unicode=True)


VALUE_LINE = re.compile(r"^(\s*(?:- )?[\w-]+: )(.+)$")


@st.composite
def raw_spliced(draw, text: str) -> str:
    """``text`` with some of its ``key: value`` lines' values replaced by raw YAML fragments."""
    lines = text.splitlines()
    spots = [i for i, line in enumerate(lines) if VALUE_LINE.match(line)]
    if not spots:
        return text
    for i in draw(st.lists(st.sampled_from(spots), max_size=3, unique=True)):
        head = VALUE_LINE.match(lines[i]).group(1)
        lines[i] = head + draw(st.sampled_from(RAW_FRAGMENTS)).replace("\n", "\n" + " " * len(head))
    return "\n".join(lines) + "\n"


def encode(text: str, style: str) -> bytes:
    """The file's bytes: UTF-8 (lone surrogates kept as invalid bytes), with a BOM, CRLF, or UTF-16."""
    if style == "utf-16":
        return text.encode("utf-16", "surrogatepass")
    if style == "crlf":
        text = text.replace("\n", "\r\n")
    data = text.encode("utf-8", "surrogatepass")
    return b"\xef\xbb\xbf" + data if style == "bom" else data


encodings = st.sampled_from(["utf-8"] * 6 + ["bom", "crlf", "utf-16"])
yaml_punctuation = st.text(st.sampled_from(list(":-?[]{}&*!|>'\"%@`#,.~ \t\n\r") + ["a", "b", "0", "\\", "\x00"]),
                           max_size=200)
random_yaml_text = st.one_of(st.builds(dump, hostile_value, st.sampled_from([None, True, False])), yaml_punctuation,
                             st.sampled_from(RAW_FRAGMENTS), st.just("a:\n" + ALIAS_BOMB + "b: *l9\n"))

# ---------------------------------------------------------------- qna.yaml


def _field(draw, good):
    """Mostly the good value; sometimes a hostile one; sometimes the key is left out (None)."""
    choice = draw(st.integers(0, 9))
    return good if choice < 6 else draw(hostile_value) if choice < 9 else None


@st.composite
def qna_document(draw) -> tuple[str, dict]:
    """A leaf's folder (which decides its kind) and a structurally valid document with hostile scalars."""
    kind = draw(st.sampled_from(["skill", "grounded", "knowledge", "foundational"]))
    version = draw(st.sampled_from([1, 2, 3])) if kind != "knowledge" else 3
    text = st.one_of(st.just("A sentence of a few words."), hostile_text)
    seeds = []
    for i in range(draw(st.integers(0, 7))):
        if kind == "knowledge":
            qas = [{"question": draw(text), "answer": draw(text)} for _ in range(draw(st.integers(0, 4)))]
            seed = {"context": draw(text), "questions_and_answers": qas}
        else:
            seed = {"question": f"{draw(text)} {i}", "answer": draw(text)}
            if kind == "grounded":
                seed["context"] = draw(text)
        seeds.append(draw(st.one_of(st.just(seed), hostile_value)) if draw(st.integers(0, 9)) == 0 else seed)
    doc: dict = {"version": _field(draw, version), "created_by": _field(draw, "ada"),
                 "seed_examples": _field(draw, seeds)}
    if kind == "knowledge":
        doc |= {"domain": _field(draw, "history"), "document_outline": _field(draw, "An outline."),
                "document": _field(draw, {"repo": "https://example.com/d.git", "commit": "0123abcd",
                                          "patterns": ["*.md"]})}
    else:
        doc["task_description"] = _field(draw, draw(text))
    if draw(st.booleans()):
        doc[draw(hostile_text)] = draw(hostile_value)
    folder = {"skill": "compositional_skills/writing", "grounded": "compositional_skills/grounded",
              "knowledge": "knowledge/history", "foundational": "foundational_skills/x"}[kind]
    return folder, {k: v for k, v in doc.items() if v is not None}


@st.composite
def qna_file(draw) -> tuple[str, bytes]:
    """``(path inside the taxonomy, file bytes)``: a hostile leaf, random YAML, or random bytes."""
    which = draw(st.sampled_from(["leaf"] * 3 + ["yaml", "bytes"]))
    folder = draw(st.sampled_from(["compositional_skills/writing", "knowledge/history", "other"]))
    if which == "leaf":
        folder, doc = draw(qna_document())
        text = draw(raw_spliced(dump(doc, draw(st.sampled_from([None, False])))))
        if draw(st.integers(0, 9)) == 0:
            text += "extra:\n" + ALIAS_BOMB
    elif which == "yaml":
        text = draw(random_yaml_text)
    else:
        return f"{folder}/qna.yaml", draw(st.binary(max_size=2000))
    return f"{folder}/qna.yaml", encode(text, draw(encodings))


# ---------------------------------------------------------------- config file and environment

SECTION_FIELDS = {s: [f.name for f in C.dataclasses.fields(t)] for s, t in C._SECTION_TYPES.items()}
ENV_VARS = [C.env_var(s, f) for s, fields in SECTION_FIELDS.items() for f in fields]
# What a real environment can hold: no NUL; bytes that are not UTF-8 arrive as surrogate escapes.
env_text = st.one_of(pick([t for t in TRICKY_TEXT if "\x00" not in t and "\ud800" not in t]),
                     st.text(st.characters(exclude_categories=(), exclude_characters="\x00")
                             .filter(lambda c: not 0xd800 <= ord(c) < 0xdc80 and not 0xdd00 <= ord(c) < 0xe000),
                             max_size=30),
                     st.from_regex(r"-?[0-9]{1,30}(\.[0-9]*)?(e[+-]?[0-9]{1,4})?", fullmatch=True),
                     pick(RAW_FRAGMENTS).filter(lambda t: "\x00" not in t and "\ud800" not in t))


@st.composite
def config_text(draw) -> str:
    """A config file: known sections and keys (and near misses) with hostile values, or noise."""
    if draw(st.integers(0, 5)) == 0:
        return draw(random_yaml_text)
    doc: dict = {}
    for section in draw(st.lists(st.sampled_from([*SECTION_FIELDS, "trian", "x"]), max_size=4, unique=True)):
        keys = SECTION_FIELDS.get(section, ["a"])
        values = {}
        for key in draw(st.lists(st.sampled_from([*keys, keys[0] + "s"]), max_size=4, unique=True)):
            values[key] = draw(st.one_of(hostile_value, env_text))
        doc[section] = draw(st.one_of(st.just(values), hostile_scalar)) if draw(st.integers(0, 9)) == 0 else values
    return draw(raw_spliced(dump(doc)))


environment = st.dictionaries(
    st.one_of(st.sampled_from(ENV_VARS), st.from_regex(r"UNFORK_[A-Z]{1,8}_[A-Z_]{1,12}", fullmatch=True)),
    env_text, max_size=4)

# ---------------------------------------------------------------- training JSONL


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


message = st.fixed_dictionaries({"role": st.one_of(st.sampled_from(["system", "user", "assistant"]), hostile_value),
                                 "content": st.one_of(hostile_text, hostile_value)})
chat_row = st.builds(lambda msgs, extra: {"messages": msgs, **extra}, st.lists(message, max_size=5),
                     st.dictionaries(st.text(max_size=5), hostile_value, max_size=2))


@st.composite
def jsonl_line(draw) -> bytes:
    kind = draw(st.sampled_from(["row"] * 4 + ["json", "deep", "bytes", "blank", "special"]))
    if kind == "row":
        row = draw(chat_row)
        try:
            text = json.dumps(row, ensure_ascii=draw(st.booleans()), default=repr)
        except (ValueError, TypeError):  # keys json cannot write
            text = "{}"
        return text.encode("utf-8", "surrogatepass")
    if kind == "json":
        return json.dumps(draw(hostile_value), default=repr).encode()
    if kind == "deep":
        depth = draw(st.sampled_from([63, 64, 65, 1000, 100_000]))
        inner = _nested(depth)
        return draw(st.sampled_from([inner, f'{{"messages": {inner}}}',
                                     f'{{"messages": [{{"role": "user", "content": "x", "n": {inner}}}]}}']
                                    )).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=200)).replace(b"\n", b"")
    if kind == "blank":
        return draw(st.sampled_from([b"", b" ", b"\t", b"\r", b"\xc2\xa0", b"\x0c"]))
    return draw(st.sampled_from([b"NaN", b'{"messages": NaN}', b'{"messages": [{"role": "user", "content": 1e999}]}',
                                 b"9" * 5000, b'{"messages": [], "messages": [{"role": "u", "content": "c"}]}',
                                 b'\xef\xbb\xbf{"messages": [{"role": "user", "content": "x"}]}',
                                 b'{"messages": [{"role": "user", "content": "\\ud800"}]}']))


jsonl_file = st.builds(lambda lines, end: b"\n".join(lines) + end, st.lists(jsonl_line(), max_size=8),
                       st.sampled_from([b"", b"\n", b"\r\n"]))

# ---------------------------------------------------------------- pipeline files

TEMPLATE_PIECES = ["{{ examples }}", "{{ task_description }}", "{% for e in examples %}{{ e }}{% endfor %}",
                   "{{ x.__class__ }}", "{{ ''.__class__.__mro__ }}", "{{ x['_y'] }}", "{{ x|attr('_y') }}",
                   "{% include 'pipeline.yaml' %}", "{% extends '../simple/skill_pairs.j2' %}", "{% import 'x' as y %}",
                   "{{", "{%", "{#", "%}", "}}", "{% raw %}", "{% macro m() %}", "{{ n }}", "{{ items }}",
                   "{{ 9**9**9 }}", "{{ range(10**9)|list }}", "{% set a = [1] %}"]
template_text = st.lists(st.one_of(st.sampled_from(TEMPLATE_PIECES), hostile_text), max_size=6).map("".join)


@st.composite
def mutated(draw, value, depth: int = 0):
    """``value`` with a few of its nodes replaced, removed or added to."""
    if depth > 6 or draw(st.integers(0, 5)) == 0:
        return draw(st.one_of(hostile_value, st.sampled_from(["../x.j2", "/etc/passwd", "skill_pairs.j2", "llm",
                                                              "judge", "rouge_l", "examples", "question"])))
    if isinstance(value, dict) and value:
        out = dict(value)
        for key in draw(st.lists(st.sampled_from(sorted(out, key=str)), min_size=1, max_size=2, unique=True)):
            action = draw(st.sampled_from(["change", "change", "drop", "add"]))
            if action == "change":
                out[key] = draw(mutated(out[key], depth + 1))
            elif action == "drop":
                del out[key]
            else:
                out[draw(st.one_of(st.sampled_from(["name", "type", "reads", "writes", "template", "k", "n",
                                                    "inputs", "choices", "parser"]), hostile_text))] = \
                    draw(hostile_value)
        return out
    if isinstance(value, list) and value:
        out = list(value)
        i = draw(st.integers(0, len(out) - 1))
        out[i] = draw(mutated(out[i], depth + 1))
        return out
    return draw(hostile_value)


@st.composite
def pipeline_change(draw, pipeline_yaml: str, templates: list[str]) -> tuple[bytes, dict[str, bytes]]:
    """New bytes for a copied pipeline.yaml, and new bytes for some of its templates."""
    kind = draw(st.sampled_from(["mutate"] * 4 + ["raw", "yaml", "bytes"]))
    if kind in ("mutate", "raw"):
        text = dump(draw(mutated(yaml.safe_load(pipeline_yaml))))
        text = draw(raw_spliced(text)) if kind == "raw" else text
    elif kind == "yaml":
        text = draw(random_yaml_text)
    else:
        text = None
    data = draw(st.binary(max_size=500)) if text is None else encode(text, draw(encodings))
    changed = {}
    for name in draw(st.lists(st.sampled_from(templates), max_size=2, unique=True)):
        changed[name] = draw(st.one_of(template_text.map(lambda t: t.encode("utf-8", "surrogatepass")),
                                       st.binary(max_size=100)))
    return data, changed


def pipeline_input() -> st.SearchStrategy[tuple[str, bytes, dict[str, bytes]]]:
    """``(built-in pipeline, new pipeline.yaml bytes, {template name: new bytes})``."""
    from unfork.sdg.pipeline import BUILTIN_DIR

    def change(name: str):
        folder = BUILTIN_DIR / name
        templates = sorted(p.name for p in folder.glob("*.j2"))
        text = (folder / "pipeline.yaml").read_text(encoding="utf-8")
        return pipeline_change(text, templates).map(lambda c: (name, *c))

    return st.sampled_from(["simple", "full", "knowledge_exam"]).flatmap(change)
