"""The yamllint rules InstructLab enforces on qna.yaml, without yamllint.

InstructLab runs ``yamllint -f parsable -d "{extends: relaxed, rules:
{line-length: disable}}"`` on every qna.yaml (version >= 2) and counts its
warnings as errors. yamllint, as a process or as a library, costs far more
per file than the rest of validation, so the same rules are re-implemented
here: line rules on the raw text, token rules on the stream of libyaml's C
scanner (PyYAML's ``CBaseLoader``), whose tokens and marks equal those of
PyYAML's pure-Python scanner that yamllint uses once marks at a byte order
mark and at the end of the text are corrected (see ``_normalise_marks``): the
same tokens on every text PyYAML parses, apart from the cases listed below.

Rules enabled by that configuration (yamllint 1.38, conf/relaxed.yaml over
conf/default.yaml): anchors (undeclared aliases only), braces and brackets
(at most one space inside), colons, commas, empty-lines (max 2, none at the
start or the end), hyphens, indentation (spaces and indent-sequences
"consistent"), key-duplicates, new-line-at-end-of-file, new-lines (unix),
trailing-spaces. ``# yamllint disable...`` comment directives are honoured.
Syntax errors are not reported: the caller reports them from its own parse.

Known differences from yamllint, all on text that is not valid YAML to
PyYAML or that no real qna.yaml contains:
- A tab after a token (``key: value<TAB>``, ``a: b<TAB>c``): PyYAML's pure
  Python scanner, and so yamllint and InstructLab's own yaml.safe_load, call
  it a syntax error; libyaml accepts it. Here a trailing tab is reported as
  trailing-spaces and any other such tab not at all, so a parser built on
  libyaml must catch these itself to match InstructLab.
- On text PyYAML cannot parse, yamllint lints the tokens before its
  scanner's error; here token rules stop at libyaml's first error instead
  (the caller reports the syntax error). Where yamllint's indentation rule
  crashes (a `]` or `}` first on a line outside any flow collection), that
  check is skipped.
- A tag with `]` in it such as ``!!s]tr`` is valid to PyYAML but not to
  libyaml: token rules stop there.
- A byte order mark anywhere but at the very start: libyaml skips it at the
  start of a line, PyYAML reads it as part of the text, so the structure may
  differ. (A leading one is handled exactly.)
"""

from __future__ import annotations

import re
from itertools import repeat
from operator import attrgetter

import yaml

from unfork.taxonomy.messages import Message

# PyYAML without libyaml still works, only much slower.
_Loader = getattr(yaml, "CBaseLoader", yaml.BaseLoader)

# Token kinds, as small ints so the rules compare them cheaply.
(NONE, STREAM_START, STREAM_END, DOC_START, DOC_END, DIRECTIVE, BLOCK_SEQ_START,
 BLOCK_MAP_START, BLOCK_END, FLOW_SEQ_START, FLOW_MAP_START, FLOW_SEQ_END,
 FLOW_MAP_END, BLOCK_ENTRY, FLOW_ENTRY, KEY, VALUE, ALIAS, ANCHOR, TAG, SCALAR) = range(21)

_KINDS = {
    yaml.StreamStartToken: STREAM_START, yaml.StreamEndToken: STREAM_END,
    yaml.DocumentStartToken: DOC_START, yaml.DocumentEndToken: DOC_END,
    yaml.DirectiveToken: DIRECTIVE, yaml.BlockSequenceStartToken: BLOCK_SEQ_START,
    yaml.BlockMappingStartToken: BLOCK_MAP_START, yaml.BlockEndToken: BLOCK_END,
    yaml.FlowSequenceStartToken: FLOW_SEQ_START, yaml.FlowMappingStartToken: FLOW_MAP_START,
    yaml.FlowSequenceEndToken: FLOW_SEQ_END, yaml.FlowMappingEndToken: FLOW_MAP_END,
    yaml.BlockEntryToken: BLOCK_ENTRY, yaml.FlowEntryToken: FLOW_ENTRY,
    yaml.KeyToken: KEY, yaml.ValueToken: VALUE, yaml.AliasToken: ALIAS,
    yaml.AnchorToken: ANCHOR, yaml.TagToken: TAG, yaml.ScalarToken: SCALAR,
}

_START, _END = attrgetter("start_mark"), attrgetter("end_mark")
_INDEX, _LINE, _COLUMN = attrgetter("index"), attrgetter("line"), attrgetter("column")

# str.isspace() is wider: yamllint uses string.whitespace.
_WS = " \t\n\r\x0b\x0c"
_BREAKS = "\r\n\x85\u2028\u2029"

_RULES = frozenset((
    "anchors", "braces", "brackets", "colons", "commas", "empty-lines", "hyphens",
    "indentation", "key-duplicates", "new-line-at-end-of-file", "new-lines",
    "trailing-spaces"))

# A problem before it becomes a Message: (line, column, rule, text, hint, source
# line). The source line is the line of the token or line that found it, which
# is where yamllint decides whether a disable directive applies.
Problem = tuple[int, int, str, str, str, int]


def lint_text(text: str) -> list[Message]:
    """Every yamllint problem in `text`, sorted by position; never raises."""
    directives = "yamllint" in text
    if directives and _disabled_file(text):
        return []
    problems: list[Problem] = []
    _line_rules(text, problems)
    toks = _Tokens(text)
    if toks.n:
        _spacing_rules(toks, problems)
        _key_duplicates(toks, problems)
        if ALIAS in toks.kind:
            _anchors(toks, problems)
        _indentation(toks, problems)
    if not problems:
        return []
    # yamllint reports what it finds on a line once it reads that line; a
    # token on a line past the last \n-ended one (lines broken by a lone \r)
    # is never reported.
    last_line = text.count("\n") + 1
    problems = [p for p in problems if p[5] <= last_line]
    if directives:
        problems = _apply_directives(text, toks, problems)
    return sorted(Message(line, col, "lint." + rule, desc, "error", "", hint)
                  for line, col, rule, desc, hint, _src in problems)


# --- line rules ------------------------------------------------------------

def _line_rules(text: str, out: list[Problem]) -> None:
    # First line only, as yamllint does: one CRLF file gives one problem.
    nl = text.find("\n")
    if nl > 0 and text[nl - 1] == "\r":
        out.append((1, nl, "new-lines", "wrong new line character: expected \\n",
                    "save the file with Unix line endings (\\n), not Windows ones (\\r\\n)", 1))
    if text and text[-1] != "\n":
        line = text.count("\n") + 1
        col = len(text) - text.rfind("\n")
        out.append((line, col, "new-line-at-end-of-file", "no new line character at the end of file",
                    "end the file with a newline", line))
    has_cr = "\r" in text
    if (" \n" in text or "\t\n" in text or has_cr or "\x0b" in text or "\x0c" in text
            or text.endswith((" ", "\t"))):
        _trailing_spaces(text, out)
    # With \n alone, only 3 blank lines in a row (4 \n) or a blank line at the
    # start or the end can be wrong; mixed line ends take the exact path.
    if has_cr or "\n\n\n\n" in text or text.startswith("\n") or text.endswith("\n\n"):
        _empty_lines(text, out)


def _trailing_spaces(text: str, out: list[Problem]) -> None:
    for number, segment in enumerate(text.split("\n"), 1):
        if segment and segment[-1] in " \t\r\x0b\x0c":
            # A CRLF's \r is not part of the line, yet stripping it with the
            # other whitespace gives the same answer.
            content = segment.rstrip(_WS)
            if segment[len(content)] in " \t":
                out.append((number, len(content) + 1, "trailing-spaces", "trailing spaces",
                            "delete the spaces at the end of the line", number))


_EMPTY_LINE = re.compile(r"\n(?=\r?\n)")


def _empty_lines(text: str, out: list[Problem]) -> None:
    """Runs of blank lines, reported on the last line of each run."""
    size = len(text)
    line, counted_to = 1, 0
    starts = [m.end() for m in _EMPTY_LINE.finditer(text)]
    if text.startswith(("\n", "\r\n")):
        starts.insert(0, 0)
    for start in starts:
        end = start     # the line's content is empty
        if text.startswith("\n\n", end) or text.startswith("\r\n\r\n", end):
            continue            # not the last blank line of its run
        line += text.count("\n", counted_to, start)
        counted_to = start
        blank, pos = 0, start
        while pos >= 2 and text[pos - 2:pos] == "\r\n":
            blank, pos = blank + 1, pos - 2
        while pos >= 1 and text[pos - 1] == "\n":
            blank, pos = blank + 1, pos - 1
        limit, hint = 2, "keep at most 2 blank lines in a row"
        if pos == 0:
            blank += 1      # the first line has no \n before it
            limit, hint = 0, "delete the blank lines at the start of the file"
        if (end == size - 1 and text[end] == "\n") or (end == size - 2 and text[end:] == "\r\n"):
            if end == 0:
                continue
            limit, hint = 0, "delete the blank lines at the end of the file"
        if blank > limit:
            out.append((line, 1, "empty-lines", f"too many blank lines ({blank} > {limit})", hint, line))


def _disabled_file(text: str) -> bool:
    first = text.split("\n", 1)[0]
    if "\n" in text and first.endswith("\r"):
        first = first[:-1]
    return re.match(r"^#\s*yamllint disable-file\s*$", first) is not None


# --- tokens ----------------------------------------------------------------

class _Tokens:
    """The scanner's tokens as parallel lists of kind, marks and value.

    Only the first `n` tokens are linted: when scanning fails after `total`
    tokens, yamllint lints a token only once it got the two after it.
    """

    def __init__(self, text: str):
        self.buf = text + "\0"     # what PyYAML's marks point into
        # libyaml skips a byte order mark after the first character where PyYAML (yamllint's scanner) reads
        # it as text, so the two disagree on the tokens; such texts are rare, and PyYAML scans them.
        loader = yaml.BaseLoader if "\ufeff" in text[1:] else _Loader
        failed = False
        try:
            toks = list(iter(loader(text).get_token, None))
        except Exception:  # any scanner failure (YAMLError, UnicodeError on lone surrogates) ends the stream
            failed = True
            toks = _tokens_before_error(text, loader)
        # map() with C callables: about twice as fast as comprehensions here.
        self.kind = list(map(_KINDS.__getitem__, map(type, toks)))
        self.kind.append(NONE)    # lets rules read the next token's kind without a check
        self.value = list(map(getattr, toks, repeat("value"), repeat(None)))
        marks = list(map(_START, toks))
        self.sidx = list(map(_INDEX, marks))
        self.sline = list(map(_LINE, marks))
        self.scol = list(map(_COLUMN, marks))
        marks = list(map(_END, toks))
        self.eidx = list(map(_INDEX, marks))
        self.eline = list(map(_LINE, marks))
        self.total = len(toks)
        self.n = max(0, self.total - 2) if failed else self.total
        if self.total and loader is not yaml.BaseLoader:
            _normalise_marks(self, text)

    def next_kind(self, i: int) -> int:
        return self.kind[i + 1]


def _tokens_before_error(text: str, loader: type = _Loader) -> list:
    """Scan again, one token at a time, keeping those before the error."""
    toks = []
    try:
        get_token = loader(text).get_token
        while (tok := get_token()) is not None:
            toks.append(tok)
    except Exception:  # expected: it is why we scan again
        pass
    return toks


def _normalise_marks(t: _Tokens, text: str) -> None:
    """Make libyaml's marks equal to those of PyYAML's pure-Python scanner (texts with a byte order mark
    after the first character never get here: PyYAML scans them). Columns already agree: neither counts a
    leading mark."""
    if text.startswith("\ufeff"):
        # libyaml drops a leading byte order mark from its index count.
        for marks in (t.sidx, t.eidx):
            for i in range(1, t.total):
                marks[i] += 1
    if text and text[-1] not in _BREAKS:
        # At the end of the text libyaml acts as if a line break followed.
        size = len(text)
        starts = _line_starts(text)
        line, col = len(starts) - 1, _py_column(text, starts[-1], size)
        for i in range(t.total - 1, -1, -1):
            if t.sidx[i] != size:
                break
            t.sline[i], t.scol[i] = line, col
        for i in range(t.total - 1, -1, -1):
            if t.eidx[i] != size:
                break
            t.eline[i] = line


def _line_starts(text: str) -> list[int]:
    return [0] + [m.end() for m in re.finditer("\r\n|[\r\n\x85\u2028\u2029]", text)]


def _py_column(text: str, line_start: int, index: int) -> int:
    # PyYAML's reader does not advance the column on a byte order mark.
    return index - line_start - text.count("\ufeff", line_start, index)


# --- token rules -------------------------------------------------------------

def _spaces_after(t: _Tokens, i: int, most: int, least: int, rule: str, what: str,
                  hint: str, out: list[Problem]) -> None:
    j = i + 1
    if j < t.total and t.eline[i] == t.sline[j]:
        spaces = t.sidx[j] - t.eidx[i]
        line = t.sline[i] + 1
        if spaces > most:
            out.append((line, t.scol[j], rule, f"too many spaces {what}", hint, line))
        elif spaces < least:
            out.append((line, t.scol[j] + 1, rule, f"too few spaces {what}", hint, line))


def _spaces_before(t: _Tokens, i: int, most: int, rule: str, what: str, hint: str,
                   out: list[Problem]) -> None:
    p = i - 1
    if p < 0 or t.eline[p] != t.sline[i]:
        return
    end = t.eidx[p]
    # A scalar may end at the start of the next line: then it is not "before".
    if end == 0 or t.buf[end - 1] != "\n":
        # A leading byte order mark lies between the stream's start and its first token: it is no space
        # (yamllint counts it as one, and reports it at column 0).
        spaces = t.sidx[i] - end - t.buf.count("\ufeff", end, t.sidx[i])
        if spaces > most:
            line = t.sline[i] + 1
            out.append((line, t.scol[i], rule, f"too many spaces {what}", hint, line))


_SPACED = frozenset((VALUE, BLOCK_ENTRY, FLOW_ENTRY, FLOW_MAP_START, FLOW_SEQ_START, FLOW_MAP_END,
                     FLOW_SEQ_END))


def _spacing_rules(t: _Tokens, out: list[Problem]) -> None:
    """hyphens, colons, commas, braces and brackets."""
    kind, sidx, eidx = t.kind, t.sidx, t.eidx
    # Only explicit keys (`? key`) have a width: skip KEY tokens unless there may be one.
    spaced = _SPACED | {KEY} if "?" in t.buf else _SPACED
    for i in [i for i, k in enumerate(kind[:t.n]) if k in spaced]:
        k = kind[i]
        if k == VALUE:
            # The common `key: value` needs no further look.
            if eidx[i - 1] != sidx[i] and not (kind[i - 1] == ALIAS and sidx[i] - eidx[i - 1] == 1):
                # (`*alias :` needs the space, or the colon would be part of the alias.)
                _spaces_before(t, i, 0, "colons", "before colon", "delete the spaces before ':'", out)
            if sidx[i + 1] - eidx[i] > 1 and not (kind[i - 1] == ALIAS and sidx[i] - eidx[i - 1] == 1):
                _spaces_after(t, i, 1, -1, "colons", "after colon", "leave exactly one space after ':'", out)
        elif k == BLOCK_ENTRY:
            if sidx[i + 1] - eidx[i] > 1:
                _spaces_after(t, i, 1, -1, "hyphens", "after hyphen", "leave exactly one space after '-'", out)
        elif k == KEY:
            if sidx[i] < eidx[i] and t.buf[sidx[i]] == "?":
                _spaces_after(t, i, 1, -1, "colons", "after question mark",
                              "leave exactly one space after '?'", out)
        elif k == FLOW_ENTRY:
            _commas(t, i, out)
        elif k in (FLOW_MAP_START, FLOW_SEQ_START):
            name, pair = ("braces", "{ }") if k == FLOW_MAP_START else ("brackets", "[ ]")
            empty = t.next_kind(i) == k + 2     # FLOW_x_START + 2 == FLOW_x_END
            what = f"inside empty {name}" if empty else f"inside {name}"
            _spaces_after(t, i, 1, 0, name, what, f"leave at most one space inside {pair}", out)
        elif k in (FLOW_MAP_END, FLOW_SEQ_END):
            if not (i and kind[i - 1] == k - 2):
                name, pair = ("braces", "{ }") if k == FLOW_MAP_END else ("brackets", "[ ]")
                _spaces_before(t, i, 1, name, f"inside {name}", f"leave at most one space inside {pair}", out)


def _commas(t: _Tokens, i: int, out: list[Problem]) -> None:
    hint = "put no space before a comma and exactly one space after it"
    if i and t.eline[i - 1] < t.sline[i]:
        line = t.sline[i] + 1
        out.append((line, max(1, t.scol[i]), "commas", "too many spaces before comma",
                    "move the comma up to the end of the previous item", line))
    else:
        _spaces_before(t, i, 0, "commas", "before comma", hint, out)
    _spaces_after(t, i, 1, 1, "commas", "after comma", hint, out)


_STRUCTURE = frozenset((BLOCK_MAP_START, FLOW_MAP_START, BLOCK_SEQ_START, FLOW_SEQ_START, BLOCK_END,
                        FLOW_MAP_END, FLOW_SEQ_END, KEY))


def _key_duplicates(t: _Tokens, out: list[Problem]) -> None:
    kind, value = t.kind, t.value
    stack: list[set | None] = []        # a set of keys per mapping, None per sequence
    for i in [i for i, k in enumerate(kind[:t.n]) if k in _STRUCTURE]:
        k = kind[i]
        if k == BLOCK_MAP_START or k == FLOW_MAP_START:
            stack.append(set())
        elif k == BLOCK_SEQ_START or k == FLOW_SEQ_START:
            stack.append(None)
        elif k == BLOCK_END or k == FLOW_MAP_END or k == FLOW_SEQ_END:
            if stack:
                stack.pop()
        elif k == KEY and t.next_kind(i) == SCALAR and stack and stack[-1] is not None:
            key = value[i + 1]
            if key in stack[-1] and key != "<<":    # `<<` is the merge key
                line = t.sline[i + 1] + 1
                out.append((line, t.scol[i + 1] + 1, "key-duplicates",
                            f'duplication of key "{key}" in mapping',
                            f'remove or rename one of the "{key}" keys', line))
            else:
                stack[-1].add(key)


def _anchors(t: _Tokens, out: list[Problem]) -> None:
    kind, value = t.kind, t.value
    anchors: set[str] = set()
    for i in range(t.n):
        k = kind[i]
        if k == STREAM_START or k == DOC_START or k == DOC_END:
            anchors = set()
        elif k == ANCHOR:
            anchors.add(value[i])
        elif k == ALIAS and value[i] not in anchors:
            line = t.sline[i] + 1
            out.append((line, t.scol[i] + 1, "anchors", f'found undeclared alias "{value[i]}"',
                        f'define the anchor "&{value[i]}" before this alias, or quote the text', line))


# --- directives --------------------------------------------------------------

_DISABLE = re.compile(r"^# yamllint disable( rule:\S+)*\s*$")
_ENABLE = re.compile(r"^# yamllint enable( rule:\S+)*\s*$")
_DISABLE_LINE = re.compile(r"^# yamllint disable-line( rule:\S+)*\s*$")


def _directive_rules(comment: str, prefix_len: int) -> set[str] | None:
    """The rules a directive names; None when it names none (meaning all)."""
    names = [item[5:] for item in comment[prefix_len:].rstrip().split(" ")][1:]
    return set(names) if names else None


def _comments(t: _Tokens) -> list[tuple[int, str, bool]]:
    """(line, text, inline) of each comment yamllint sees, in stream order."""
    found = []
    buf, kind = t.buf, t.kind
    for i in range(t.n):
        j = i + 1
        if j >= t.total:
            gap = buf[t.eidx[i]:]
        elif t.eline[i] == t.sline[j] and kind[i] != STREAM_START and kind[j] != STREAM_END:
            continue
        else:
            gap = buf[t.eidx[i]:t.sidx[j]]
        if "#" not in gap:
            continue
        line, pointer = t.eline[i] + 1, t.eidx[i]
        for part in gap.split("\n"):
            pos = part.find("#")
            if pos != -1:
                start = pointer + pos
                stop = buf.find("\n", start)
                text = buf[start:stop if stop != -1 else buf.find("\0", start)]
                inline = (kind[i] != STREAM_START and line == t.eline[i] + 1
                          and buf[t.eidx[i] - 1] != "\n")
                found.append((line, text, inline))
            pointer += len(part) + 1
            line += 1
    return found


def _apply_directives(text: str, t: _Tokens, problems: list[Problem]) -> list[Problem]:
    """Drop problems silenced by `# yamllint disable[-line]` comments.

    yamllint decides per line: once all tokens and comments of a line are
    read, a problem found there is dropped if its rule is disabled at that
    point, or disabled for that line by a `disable-line` comment on it or
    alone on the line before.
    """
    comments = [c for c in _comments(t) if "yamllint" in c[1]]
    if not comments:
        return problems
    by_line: dict[int, list[Problem]] = {}
    for p in problems:
        by_line.setdefault(p[5], []).append(p)
    kept: list[Problem] = []
    disabled: set[str] = set()
    this_line: set[str] = set()
    next_line: set[str] = set()
    ci = 0
    for line in range(1, text.count("\n") + 2):
        while ci < len(comments) and comments[ci][0] <= line:
            _, comment, inline = comments[ci]
            ci += 1
            if _DISABLE.match(comment):
                names = _directive_rules(comment, 18)
                disabled = set(_RULES) if names is None else disabled | (names & _RULES)
            elif _ENABLE.match(comment):
                names = _directive_rules(comment, 17)
                disabled = set() if names is None else disabled - names
            if _DISABLE_LINE.match(comment):
                names = _directive_rules(comment, 23)
                target = this_line if inline else next_line
                target |= _RULES if names is None else (names & _RULES)
        kept.extend(p for p in by_line.get(line, ()) if p[2] not in disabled and p[2] not in this_line)
        this_line, next_line = next_line, set()
    return kept


# --- indentation -------------------------------------------------------------
# A port of yamllint's indentation state machine (spaces: consistent,
# indent-sequences: consistent, check-multi-line-strings: false). The stack
# holds what encloses the current token: [type, indent, line_indent,
# explicit_key, implicit_block_seq]; `indent` is the column its content must
# start at.

ROOT, B_MAP, F_MAP, B_SEQ, F_SEQ, B_ENT, P_KEY, P_VAL = range(8)
_INVISIBLE = frozenset((STREAM_START, STREAM_END, BLOCK_END))
_NO_VALUE = frozenset((BLOCK_END, FLOW_MAP_END, FLOW_SEQ_END, KEY))
# Closed only by an end token, so a scalar never closes them.
_CLOSED_BY_END = frozenset((ROOT, B_MAP, F_MAP, B_SEQ, F_SEQ))
_INDENT_HINT = "indent this line with exactly {} spaces"


class _CannotInfer(Exception):
    """The token stream does not fit the structure being tracked."""


class _IndentState:
    __slots__ = ("stack", "cur_line_indent", "spaces", "indent_seq")

    def __init__(self):
        self.stack = [[ROOT, 0, None, False, False]]
        self.cur_line_indent = 0
        self.spaces: int | None = None            # None until the first indent is seen
        self.indent_seq: bool | str = "consistent"  # decided by the first sequence value

    def detect(self, base: int, column: int) -> int:
        if self.spaces is None:
            self.spaces = column - base
        return base + self.spaces


def _indentation(t: _Tokens, out: list[Problem]) -> None:
    st = _IndentState()
    stack, kind, eidx, buf = st.stack, t.kind, t.eidx, t.buf
    cur_line = 0     # 1-based line the last visible token ended on
    rows = zip(range(t.n), kind, t.value, t.sline, t.scol, t.eline, strict=False)  # stops at n
    for i, k, value, sline, scol, eline in rows:
        try:
            if k in _INVISIBLE or (k == SCALAR and value == ""):
                _indent_pop(t, i, k, st)
                continue
            if sline >= cur_line:     # first token on its line
                top = stack[-1]
                if scol == top[1] and top[0] != P_KEY and k != FLOW_MAP_END and k != FLOW_SEQ_END:
                    st.cur_line_indent = scol   # where it is expected: the common case
                else:
                    _indent_check(t, i, k, st, out)
            if k == SCALAR:
                cur_line = _real_end_line(t, i) if buf[eidx[i] - 1] in _WS else eline + 1
                top = stack[-1][0]
                if top == P_VAL and stack[-2][0] == P_KEY and stack[-3][0] in _CLOSED_BY_END:
                    del stack[-2:]      # the commonest close, `key: value`, without the call
                    continue
            else:
                cur_line = eline + 1
                if k == KEY:
                    stack.append([P_KEY, stack[-1][1], None, t.sidx[i] < eidx[i] and buf[t.sidx[i]] == "?", False])
                elif k == VALUE:
                    _indent_value(t, i, st)
                else:
                    _indent_push(t, i, k, st)
                top = stack[-1][0]
            # Skip the call in the two commonest cases where nothing closes.
            if not ((top == P_KEY and kind[i + 1] not in _NO_VALUE)
                    or (top == P_VAL and (k == VALUE or k == ANCHOR or k == TAG))):
                _indent_pop(t, i, k, st)
        except _CannotInfer:
            out.append((sline + 1, scol + 1, "indentation", "cannot infer indentation: unexpected token",
                        "check the nesting of the lines around this one", sline + 1))


def _indent_check(t: _Tokens, i: int, k: int, st: _IndentState, out: list[Problem]) -> None:
    found = t.scol[i]
    st.cur_line_indent = found
    top = st.stack[-1]
    expected = top[1]
    if k == FLOW_MAP_END or k == FLOW_SEQ_END:
        expected = top[2]   # None outside a flow collection: yamllint crashes there
    elif top[0] == P_KEY and top[3] and k != VALUE:
        expected = st.detect(expected, found)
    if expected is not None and found != expected:
        line = t.sline[i] + 1
        if expected < 0:
            desc, hint = f"wrong indentation: expected at least {found + 1}", "indent this line more"
        else:
            desc = f"wrong indentation: expected {expected} but found {found}"
            hint = _INDENT_HINT.format(expected)
        out.append((line, found + 1, "indentation", desc, hint, line))


def _real_end_line(t: _Tokens, i: int) -> int:
    """1-based line a token ends on; a scalar's end mark may be lines later."""
    end_line = t.eline[i] + 1
    if t.kind[i] != SCALAR:
        return end_line
    buf, pos, stop = t.buf, t.eidx[i] - 1, t.sidx[i] - 1
    while pos >= stop and buf[pos] in _WS:
        if buf[pos] == "\n":
            end_line -= 1
        pos -= 1
    return end_line


def _indent_push(t: _Tokens, i: int, k: int, st: _IndentState) -> None:
    stack, nk = st.stack, t.next_kind(i)
    if k == BLOCK_MAP_START or k == BLOCK_SEQ_START:
        if nk != (KEY if k == BLOCK_MAP_START else BLOCK_ENTRY) or t.sline[i + 1] != t.sline[i]:
            raise _CannotInfer
        stack.append([B_MAP if k == BLOCK_MAP_START else B_SEQ, t.scol[i], None, False, False])
    elif k == FLOW_MAP_START or k == FLOW_SEQ_START:
        if nk == NONE:
            return
        j = i + 1
        if t.sline[j] == t.sline[i]:
            indent = t.scol[j]
        else:
            indent = st.detect(st.cur_line_indent, t.scol[j])
        stack.append([F_MAP if k == FLOW_MAP_START else F_SEQ, indent, st.cur_line_indent, False, False])
    elif k == BLOCK_ENTRY and nk != BLOCK_ENTRY and nk != BLOCK_END and nk != NONE:
        # PyYAML emits no BlockSequenceStart for a sequence that is not indented.
        if stack[-1][0] != B_SEQ:
            stack.append([B_SEQ, t.scol[i], None, False, True])
        j = i + 1
        if t.sline[j] == t.eline[i] or t.scol[j] == t.scol[i]:
            indent = t.scol[j]
        else:
            indent = st.detect(t.scol[i], t.scol[j])
        stack.append([B_ENT, indent, None, False, False])


def _indent_value(t: _Tokens, i: int, st: _IndentState) -> None:
    stack = st.stack
    if stack[-1][0] != P_KEY:
        raise _CannotInfer
    j = i + 1
    if j >= t.total:
        return
    # `key: &anchor` or `key: !!tag` with the value on the next line.
    if t.kind[j] in (ANCHOR, TAG) and j + 1 < t.total:
        if t.sline[j] == t.sline[i - 1] and t.sline[j] < t.sline[j + 1]:
            j += 1
    nk = t.kind[j]
    if nk in _NO_VALUE:
        return
    top_indent = stack[-1][1]
    col = t.scol[j]
    if stack[-1][3]:
        indent = st.detect(top_indent, col)
    elif t.sline[j] == t.sline[i - 1]:
        indent = col
    elif nk == BLOCK_SEQ_START or nk == BLOCK_ENTRY:
        if st.indent_seq == "consistent":
            st.indent_seq = col != top_indent
        if st.indent_seq is False:
            indent = top_indent
        elif st.spaces is None and col == top_indent:
            indent = -1     # not indented, and the indent size is not known yet
        else:
            indent = st.detect(top_indent, col)
    else:
        indent = st.detect(top_indent, col)
    stack.append([P_VAL, indent, None, False, False])


def _indent_pop(t: _Tokens, i: int, k: int, st: _IndentState) -> None:
    stack, nk = st.stack, t.next_kind(i)
    consumed = False
    while True:
        top = stack[-1][0]
        if not consumed and ((top == F_SEQ and k == FLOW_SEQ_END) or (top == F_MAP and k == FLOW_MAP_END)
                             or ((top == B_MAP or top == B_SEQ) and k == BLOCK_END and not stack[-1][4])):
            stack.pop()
            consumed = True
        elif (top == B_ENT and k != BLOCK_ENTRY and stack[-2][4] and k != ANCHOR and k != TAG
              and nk != BLOCK_ENTRY):
            stack.pop()
            stack.pop()
        elif top == B_ENT and (nk == BLOCK_ENTRY or nk == BLOCK_END):
            stack.pop()
        elif top == P_VAL and k != VALUE and k != ANCHOR and k != TAG:
            if stack[-2][0] != P_KEY:
                raise _CannotInfer
            stack.pop()
            stack.pop()
        elif top == P_KEY and nk in _NO_VALUE:
            stack.pop()    # a key without a value, as in a set
        else:
            break
