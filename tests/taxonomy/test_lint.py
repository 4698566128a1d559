"""lint_text must find exactly what yamllint finds with InstructLab's settings.

Most tests are differential: the real yamllint (a dev dependency), run as a
library with `{extends: relaxed, rules: {line-length: disable}}`, is the
reference. Its "syntax" messages are left out: our caller reports syntax
errors from its own parse.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unfork.taxonomy.lint import lint_text
from unfork.taxonomy.messages import Message

yamllint_linter = pytest.importorskip("yamllint.linter")
from yamllint.config import YamlLintConfig  # noqa: E402 - only once yamllint is known to be there

HERE = Path(__file__).resolve().parent
CASES_DIR = HERE / "lint_cases"
SHARED_EXAMPLES = HERE.parents[1].parent / "shared" / "taxonomy-examples"
CONF = YamlLintConfig("{extends: relaxed, rules: {line-length: disable}}")


def reference(text: str) -> Counter | None:
    """yamllint's (line, column, rule) findings; None if it sees a syntax error."""
    found = Counter()
    for problem in yamllint_linter.run(text, CONF):
        if problem.rule is None:    # "syntax error: ..."
            return None
        found[(problem.line, problem.column, "lint." + problem.rule)] += 1
    return found


def ours(text: str) -> Counter:
    return Counter((m.line, m.column, m.rule) for m in lint_text(text))


def assert_same_as_yamllint(text: str) -> None:
    expected = reference(text)
    assert expected is not None, "test case must be valid YAML for yamllint"
    assert ours(text) == expected, text


# --- real-looking files ------------------------------------------------------

def example_files() -> list[Path]:
    files = sorted(CASES_DIR.glob("*.yaml"))
    if SHARED_EXAMPLES.is_dir():
        files += sorted(SHARED_EXAMPLES.rglob("qna.yaml"))
    return files


@pytest.mark.parametrize("path", example_files(), ids=lambda p: "/".join(p.parts[-3:]))
def test_example_files_agree_with_yamllint(path: Path):
    text = path.read_text(encoding="utf-8")
    assert_same_as_yamllint(text)
    # The same file broken in the usual ways must still agree.
    lines = text.split("\n")
    assert_same_as_yamllint("\n".join(line + "  " if i % 3 == 0 else line for i, line in enumerate(lines)))
    assert_same_as_yamllint(text.replace("\n", "\r\n"))
    assert_same_as_yamllint(text.rstrip("\n"))
    assert_same_as_yamllint("\n\n" + text.replace("\n\n", "\n\n\n\n", 1) + "\n\n")


def test_clean_files_have_no_problems():
    for path in sorted(CASES_DIR.glob("*.yaml")):
        assert lint_text(path.read_text(encoding="utf-8")) == [], path.name


# --- one broken case per rule --------------------------------------------------
# Each lists what yamllint reports (checked against it too), so a wrong
# expectation and a wrong implementation both show.

CASES = {
    "trailing-spaces": (
        "version: 3 \ncreated_by: me\nseed_examples:\n  - question: q\n    answer: a   \n",
        [(1, 11, "trailing-spaces"), (5, 14, "trailing-spaces")]),
    "trailing-tab-in-block-scalar": (
        "answer: |\n  text\t\n  more\n", [(2, 7, "trailing-spaces")]),
    "no-final-newline": (
        "version: 3\ncreated_by: me", [(2, 15, "new-line-at-end-of-file")]),
    "three-blank-lines": (
        "version: 3\n\n\n\ncreated_by: me\n", [(4, 1, "empty-lines")]),
    "two-blank-lines-are-fine": ("version: 3\n\n\ncreated_by: me\n", []),
    "blank-line-at-start": ("\nversion: 3\n", [(1, 1, "empty-lines")]),
    "blank-lines-at-end": ("version: 3\n\n\n", [(3, 1, "empty-lines")]),
    "crlf": (
        "version: 3\r\ncreated_by: me\r\n", [(1, 11, "new-lines")]),
    "crlf-blank-lines": (
        "a: 1\r\n\r\n\r\n\r\nb: 2\r\n\r\n", [(1, 5, "new-lines"), (4, 1, "empty-lines"), (6, 1, "empty-lines")]),
    "mapping-indentation": (
        "seed_examples:\n  - question: q\n    answer: a\nother:\n   x: 1\n",
        [(5, 4, "indentation")]),
    "indent-size-set-by-first-indent": (
        "document:\n    repo: r\n    commit: c\nother:\n  x: 1\n", [(5, 3, "indentation")]),
    "sequence-indentation-inconsistent": (
        "seed_examples:\n  - question: q\n    answer: a\npatterns:\n- a\n- b\n", [(5, 1, "indentation")]),
    "sequence-not-indented-first": (
        "patterns:\n- a\nother:\n  - b\n", [(4, 3, "indentation")]),
    "sequence-item-indentation": (
        "seed_examples:\n  - question: q\n  -   question: r\n", [(3, 6, "hyphens")]),
    "colons": (
        "version : 3\ncreated_by:  me\n",
        [(1, 8, "colons"), (2, 13, "colons")]),
    "question-mark": ("?  key\n: value\n", [(1, 3, "colons")]),
    "hyphens": (
        "seed_examples:\n  -  question: q\n     answer: a\n", [(2, 5, "hyphens")]),
    "commas": (
        "list: [a ,b,  c]\nmulti: [a\n  , b]\n",
        [(1, 9, "commas"), (1, 11, "commas"), (1, 14, "commas"), (3, 2, "commas"), (3, 3, "indentation")]),
    "braces": (
        "map: {  a: 1, b: 2  }\nempty: {   }\nok: { a: 1 }\n",
        [(1, 8, "braces"), (1, 20, "braces"), (2, 11, "braces")]),
    "brackets": (
        "list: [  a, b  ]\nempty: [   ]\nok: [ a ]\n",
        [(1, 9, "brackets"), (1, 15, "brackets"), (2, 11, "brackets")]),
    "key-duplicates": (
        "version: 3\nseed_examples:\n  - question: q\n    answer: a\n    answer: b\nversion: 2\nm: {x: 1, x: 2}\n",
        [(5, 5, "key-duplicates"), (6, 1, "key-duplicates"), (7, 11, "key-duplicates")]),
    "same-key-in-different-mappings": (
        "- answer: a\n- answer: b\n", []),
    "anchors": ("a: &anchor 1\nb: *anchor\nc: *missing\n", [(3, 4, "anchors")]),
    "block-scalar-content-is-not-checked": ("answer: |\n    text\n      more\nq: >\n  folded\n", []),
    "explicit-keys": (
        "? a\n: b\n?\n    c\n:   d\n", [(4, 5, "indentation"), (5, 4, "colons")]),
    "value-after-anchor-on-next-line": ("key: &a\n  - x\nother: !!str\n  y\n", []),
    "flow-collection-over-lines": (
        "key: [\n    a, b,\n  c\n]\n", [(3, 3, "indentation")]),
    "comments-are-not-checked": ("a: 1  #comment\n#   other\n  # indented\nb: 2\n", []),
    "directives": (
        "a: 1   # yamllint disable-line rule:trailing-spaces\nb: 2 \n# yamllint disable-line\nc: 3 \n"
        "# yamllint disable rule:trailing-spaces\nd: 4 \n# yamllint enable\ne: 5 \n",
        [(2, 5, "trailing-spaces"), (8, 5, "trailing-spaces")]),
    "disable-file": ("# yamllint disable-file\na: 1 \n", []),
    "byte-order-mark": ("\ufeffversion: 3\nlist: [ a,  b ]\n", [(2, 12, "commas")]),
    # libyaml skipped the second mark as if it were a space, and saw a ']' with a space before it
    "byte-order-mark-after-the-first": ("\ufeff\ufeff]\n", []),
}


@pytest.mark.parametrize("name", CASES)
def test_broken_case(name: str):
    text, expected = CASES[name]
    assert reference(text) == Counter((line, col, "lint." + rule) for line, col, rule in expected)
    assert_same_as_yamllint(text)


def test_messages_say_what_and_how_to_fix():
    messages = lint_text("seed_examples:\n  - question: q\n    answer: a \n    answer: b\n")
    assert [(m.line, m.column, m.rule) for m in messages] == [
        (3, 14, "lint.trailing-spaces"), (4, 5, "lint.key-duplicates")]
    trailing, duplicate = messages
    assert isinstance(trailing, Message)
    assert trailing.message == "trailing spaces" and trailing.severity == "error"
    assert duplicate.message == 'duplication of key "answer" in mapping'
    assert all(m.hint and m.hint[0].islower() for m in messages)
    wrong = lint_text("a:\n    b: 1\nc:\n  d: 2\n")
    assert wrong[0].message == "wrong indentation: expected 4 but found 2"
    assert "4 spaces" in wrong[0].hint


def test_pure_python_scanner_gives_the_same_answers(monkeypatch):
    # Without libyaml the module falls back to PyYAML's own scanner.
    import yaml

    from unfork.taxonomy import lint
    monkeypatch.setattr(lint, "_Loader", yaml.BaseLoader)
    for text, expected in CASES.values():
        assert ours(text) == Counter((line, col, "lint." + rule) for line, col, rule in expected), text


def test_text_that_does_not_parse_is_linted_up_to_the_error():
    # Like yamllint: line rules everywhere, token rules on the tokens before
    # the scanner's error; the syntax error itself is the caller's to report.
    text = "a:  1\nb:   2\nc: 3 \nd: 'x\n"
    assert reference(text) is None
    assert ours(text) == Counter({(1, 4, "lint.colons"): 1, (2, 5, "lint.colons"): 1,
                                  (3, 5, "lint.trailing-spaces"): 1})
    assert lint_text("key: 'unterminated\n") == []


# --- generated documents ---------------------------------------------------------

KEYS = ["version", "created_by", "question", "answer", "context", "seed_examples", "a", "b"]
WORDS = st.sampled_from(["word", "two words", "x", "3", "true", "a-b", "é", "tab\there", "end."])


@st.composite
def scalar(draw) -> str:
    kind = draw(st.sampled_from(["plain", "plain", "double", "single", "anchor", "alias", "flowseq", "flowmap"]))
    word = draw(WORDS)
    if kind == "double":
        return '"' + word + '"'
    if kind == "single":
        return "'" + word + "'"
    if kind == "anchor":
        return "&" + draw(st.sampled_from(["a", "b"])) + " " + word.replace("\t", "")
    if kind == "alias":
        return "*" + draw(st.sampled_from(["a", "b", "c"]))
    space = draw(st.sampled_from(["", " ", "  "]))
    comma = draw(st.sampled_from([", ", ",", " , ", ",  "]))
    if kind == "flowseq":
        return "[" + space + comma.join(draw(st.lists(WORDS, max_size=3))) + space + "]"
    if kind == "flowmap":
        items = draw(st.lists(st.sampled_from(KEYS), max_size=3))
        return "{" + space + comma.join(f"{k}: {i}" for i, k in enumerate(items)) + space + "}"
    return word


def block_scalar(draw, indent: int) -> list[str]:
    header = draw(st.sampled_from(["|", ">", "|-", ">+", "|2"]))
    step = draw(st.sampled_from([2, 2, 4, 1]))
    body = []
    for _ in range(draw(st.integers(1, 4))):
        extra = draw(st.sampled_from([0, 0, 0, 2]))
        body.append(" " * (indent + step + extra) + draw(WORDS) if draw(st.booleans()) else "")
    if not body[0]:
        body[0] = " " * (indent + step) + "first"
    return [header, *body]


def mapping(draw, indent: int, depth: int, first_prefix: str = "") -> list[str]:
    """Lines of a block mapping; the first key goes after `first_prefix`."""
    lines = []
    for n in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(KEYS))
        before = draw(st.sampled_from(["", "", "", " "]))
        after = draw(st.sampled_from([" ", " ", " ", "  "]))
        head = (first_prefix if n == 0 else " " * indent) + key + before + ":"
        lines.extend([""] * draw(st.sampled_from([0, 0, 0, 1, 3])))
        lines.extend(value(draw, head, after, indent, depth))
    return lines


def value(draw, head: str, after: str, indent: int, depth: int) -> list[str]:
    kind = draw(st.sampled_from(["scalar", "scalar", "block", "map", "seq", "empty"] if depth < 3 else
                                ["scalar", "block", "empty"]))
    if kind == "scalar":
        return [head + after + draw(scalar())]
    if kind == "empty":
        return [head]
    if kind == "block":
        header, *body = block_scalar(draw, indent)
        return [head + after + header, *body]
    step = draw(st.sampled_from([2, 2, 4, 3, 0] if kind == "seq" else [2, 2, 4, 1]))
    if kind == "map":
        return [head, *mapping(draw, indent + step, depth + 1, " " * (indent + step))]
    return [head, *sequence(draw, indent + step, depth + 1)]


def sequence(draw, indent: int, depth: int) -> list[str]:
    lines = []
    for _ in range(draw(st.integers(1, 3))):
        hyphen = " " * indent + "-" + draw(st.sampled_from([" ", " ", " ", "  "]))
        if draw(st.booleans()):
            lines.extend(mapping(draw, len(hyphen), depth + 1, hyphen))
        else:
            lines.append(hyphen + draw(scalar()))
        if draw(st.integers(0, 9)) == 0:
            lines.append(" " * draw(st.integers(0, indent + 2)) + "# comment")
    return lines


DIRECTIVES = [
    "# yamllint disable", "# yamllint enable", "# yamllint disable-line",
    "# yamllint disable rule:trailing-spaces", "# yamllint enable rule:trailing-spaces",
    "# yamllint disable rule:colons rule:indentation", "# yamllint disable-line rule:key-duplicates",
    "# yamllint disable-line rule:no-such-rule", "#yamllint disable", "# yamllint disable-file",
]


@st.composite
def documents(draw) -> str:
    lines = mapping(draw, 0, 0)
    if draw(st.integers(0, 4)) == 0:
        lines.insert(0, "---")
    for _ in range(draw(st.integers(0, 3))):        # trailing spaces and tabs
        i = draw(st.integers(0, len(lines) - 1))
        lines[i] += draw(st.sampled_from([" ", "  ", "\t", " \t"]))
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 1, 2]))):
        directive = draw(st.sampled_from(DIRECTIVES))
        i = draw(st.integers(0, len(lines) - 1))
        if draw(st.booleans()) and lines[i].strip():
            lines[i] += "  " + directive
        else:
            lines.insert(i, " " * draw(st.integers(0, 4)) + directive)
    text = "\n".join(lines) + draw(st.sampled_from(["\n", "\n", "\n", "", "\n\n", "\n\n\n"]))
    text = draw(st.sampled_from(["", "", "", "\n", "\ufeff"])) + text
    if draw(st.integers(0, 6)) == 0:
        text = text.replace("\n", "\r\n")
    return text


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_generated_documents_agree_with_yamllint(text: str):
    expected = reference(text)
    if expected is None:    # not valid YAML: the caller reports that, not us
        return
    assert ours(text) == expected


def test_a_leading_byte_order_mark_is_no_space_before_a_comma():
    # Found by test_any_text_never_raises: yamllint's rule, which we follow, counted the mark as a space and
    # put the problem at column 0.
    assert [m.rule for m in lint_text("\ufeff,") if "before" in m.message] == []
    assert [(m.line, m.column) for m in lint_text("\ufeff ,") if "before comma" in m.message] == [(1, 1)]


YAML_CHARS = st.sampled_from(list("-:?[]{},#&*!|>'\"%@` \t\n\r\\") + ["\r\n", "\ufeff", "\x85", "\u2028"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(YAML_CHARS, st.text(max_size=4)), max_size=60).map("".join))
def test_any_text_never_raises(text: str):
    for message in lint_text(text):
        assert message.rule.startswith("lint.") and message.line >= 1 and message.column >= 1


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_binary_junk_never_raises(data: bytes):
    lint_text(data.decode("latin-1"))
    lint_text(data.decode("utf-8", errors="surrogateescape"))


@pytest.mark.parametrize("text", [
    "[" * 50_000,
    "{" * 50_000 + "a",
    "a: " + "[a, " * 20_000,
    "- " * 20_000 + "x\n",
    "".join(f"k{i}: v\n" for i in range(20_000)),
    "".join(f"k: v{i}\n" for i in range(20_000)),
    "x" * 1_000_000,
    "\t" * 100_000,
    "a: |\n" + "  x \n" * 50_000,
    "".join(" " * i + "a:\n" for i in range(0, 4_000, 2)),
    "\n\r\n" * 50_000,
    "\r\n\n" * 50_000,
    " \n" * 100_000,
    "# yamllint disable-line\na: 1 \n" * 10_000,
])
def test_adversarial_input_is_handled(text: str):
    # Not timed here (bench/bench_lint.py measures speed), but each of these
    # would take minutes if any rule were quadratic.
    lint_text(text)
