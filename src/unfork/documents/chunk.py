"""Cut a document's text into chunks that each fit a token budget.

Every prompt built from a chunk must fit the teacher's context, so
``chunk_text`` cuts along Markdown structure first and never returns a chunk
over ``max_tokens``; sdg generates from the chunks and eval's knowledge exam
asks about them.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from unfork.tokens import estimate_tokens

if TYPE_CHECKING:
    from unfork.documents.convert import Document


@dataclass
class Chunk:
    doc: str  # Document.source it was cut from
    index: int  # position among that document's chunks, from 0
    text: str
    tokens: int  # count_tokens(text)


@dataclass(frozen=True)
class ChunkSpan:
    """Where a chunk comes from in its document.

    The chunk's text is ``heading`` (the headings above it, when that fits),
    a blank line, then ``text[start:end].strip()``. ``text[start:body_start]`` is
    the overlap repeated from the previous chunk; the ``[body_start, end)``
    ranges of consecutive chunks tile the whole document.
    """

    start: int
    body_start: int
    end: int
    heading: str
    tokens: int


_ATX_HEADING = re.compile(r" {0,3}(#{1,6})(?:[ \t]|$)")
_FENCE = re.compile(r" {0,3}(```|~~~)")
_SENTENCE_END = re.compile(r"""[.!?\u2026\u3002\uff01\uff1f][)\]"'\u201d\u2019\u00bb]*\s+""")
_WORD_START = re.compile(r"(?<=\s)\S")
_NEWLINE = re.compile(r"\n")
_NON_SPACE = re.compile(r"\S")


@dataclass(frozen=True)
class _Heading:
    start: int
    end: int  # end of its line, newline included
    level: int
    line: str


def _blocks(text: str) -> tuple[list[int], list[_Heading]]:
    """Cut positions between Markdown blocks (paragraphs, headings) and the headings."""
    cuts, headings = [], []
    pos, in_fence, after_blank = 0, False, False
    for line in text.splitlines(keepends=True):
        fence = _FENCE.match(line)
        blank = not line.strip()
        heading = None if in_fence else _ATX_HEADING.match(line)
        if not in_fence and (heading or (after_blank and not blank)):
            cuts.append(pos)
        if heading:
            headings.append(_Heading(pos, pos + len(line), len(heading.group(1)), line.strip()))
            cuts.append(pos + len(line))
        if fence:
            in_fence = not in_fence
        after_blank = blank
        pos += len(line)
    return cuts, headings


def _spans(cuts: list[int], start: int, end: int) -> list[tuple[int, int]]:
    points = [start, *sorted({c for c in cuts if start < c < end}), end]
    return list(zip(points, points[1:], strict=False))


def _pieces(text: str, block_cuts: list[int], count: Callable[[str], int],
            budget: int) -> list[tuple[int, int]]:
    """Cut ``text`` into spans that tile it and each fit ``budget``, coarsest first."""
    out: list[tuple[int, int]] = []

    def fits(a: int, b: int) -> bool:
        return count(text[a:b].strip()) <= budget

    def split(a: int, b: int, level: int) -> None:
        if fits(a, b):
            out.append((a, b))
            return
        if level == 0:  # sentences and lines
            cuts = [m.end() for m in _SENTENCE_END.finditer(text, a, b)]
            cuts += [m.end() for m in _NEWLINE.finditer(text, a, b)]
        elif level == 1:  # words
            cuts = [m.start() for m in _WORD_START.finditer(text, a, b)]
        else:  # characters: only a single word longer than the budget gets here
            while a < b:
                if not fits(a, a + 1):
                    raise ValueError(f"max_tokens={budget} cannot hold even one character")
                lo, hi = a + 1, b
                while lo < hi:
                    mid = (lo + hi + 1) // 2
                    if fits(a, mid):
                        lo = mid
                    else:
                        hi = mid - 1
                out.append((a, lo))
                a = lo
            return
        for sa, sb in _spans(cuts, a, b):
            split(sa, sb, level + 1)

    for a, b in _spans(block_cuts, 0, len(text)):
        split(a, b, 0)
    # Whitespace alone is no piece: glue it to the next (or, at the end, the previous) one.
    merged: list[tuple[int, int]] = []
    carry = None
    for a, b in out:
        if carry is not None:
            a, carry = carry, None
        if not text[a:b].strip():
            carry = a
            continue
        merged.append((a, b))
    if carry is not None and merged:
        merged[-1] = (merged[-1][0], len(text))
    return merged


class _Outline:
    """The headings of a text, each with its parent, to find the path above any position fast."""

    def __init__(self, text: str, headings: list[_Heading]):
        self.text, self.headings = text, headings
        self.starts = [h.start for h in headings]
        self.parent: list[int | None] = []
        stack: list[int] = []
        for k, h in enumerate(headings):
            while stack and headings[stack[-1]].level >= h.level:
                stack.pop()
            self.parent.append(stack[-1] if stack else None)
            stack.append(k)

    def path(self, pos: int) -> str:
        """The headings above ``pos``, outermost first. A heading that is the chunk's own first
        line is left out, and so are the sections it closes (``### B`` drops ``### A``)."""
        found = _NON_SPACE.search(self.text, pos)
        first = found.start() if found else len(self.text)
        k = bisect.bisect_right(self.starts, first) - 1
        if k < 0:
            return ""
        chain: list[int] = []
        node = self.parent[k] if self.headings[k].end > first else k
        while node is not None:
            chain.append(node)
            node = self.parent[node]
        return "\n".join(self.headings[n].line for n in reversed(chain))


def _overlap_start(text: str, prev: int, body_start: int, count: Callable[[str], int], overlap_tokens: int,
                   sentence_starts: set[int]) -> int:
    """Where the overlap before ``body_start`` begins: the longest run of whole words from the previous
    chunk's body that fits ``overlap_tokens``, from a sentence start if one does."""
    overlap, sentence = body_start, None
    for m in reversed(list(re.finditer(r"\S+", text[prev:body_start]))):
        if count(text[prev + m.start():body_start].strip()) > overlap_tokens:
            break
        overlap = prev + m.start()
        if overlap in sentence_starts:
            sentence = overlap
    return sentence if sentence is not None else overlap


def chunk_spans(text: str, *, max_tokens: int, overlap_tokens: int = 32,
                count_tokens: Callable[[str], int] | None = None) -> list[ChunkSpan]:
    """Plan the chunks of ``text``: see ``chunk_text``, which cuts along these spans."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, not {max_tokens}")
    if overlap_tokens < 0:
        raise ValueError(f"overlap_tokens must be at least 0, not {overlap_tokens}")
    overlap_tokens = min(overlap_tokens, max_tokens // 2)  # the default 32 with a small budget
    count = count_tokens or estimate_tokens
    block_cuts, headings = _blocks(text)
    pieces = _pieces(text, block_cuts, count, max_tokens)
    outline = _Outline(text, headings)
    heading_starts = set(outline.starts)
    is_heading = [(m := _NON_SPACE.search(text, a)) is not None and m.start() in heading_starts
                  for a, _ in pieces]
    sentence_starts = {0, *block_cuts, *(m.end() for m in _SENTENCE_END.finditer(text))}

    def render(prefix: str, start: int, end: int) -> str:
        body = text[start:end].strip()
        return f"{prefix}\n\n{body}" if prefix else body

    def pack(i: int, prefix: str, start: int) -> tuple[int, int] | None:
        """(end piece, tokens) of the longest chunk from piece ``i`` after ``prefix``; None if none fits."""
        def measure(j: int) -> int:  # tokens of the chunk holding pieces i..j-1
            return count(render(prefix, start, pieces[j - 1][1]))

        tokens = measure(i + 1)
        if tokens > max_tokens:
            return None
        # Gallop, then bisect: O(log n) counts per chunk, which matters with a real tokenizer.
        # The chunk kept is always one that was measured to fit.
        j, step, too_far = i + 1, 1, None
        while j < len(pieces):
            probe = min(j + step, len(pieces))
            more = measure(probe)
            if more > max_tokens:
                too_far = probe
                break
            tokens, j, step = more, probe, step * 2
        while too_far is not None and too_far - j > 1:
            mid = (j + too_far) // 2
            more = measure(mid)
            if more > max_tokens:
                too_far = mid
            else:
                tokens, j = more, mid
        if j < len(pieces) and is_heading[j - 1] and j - 1 > i:
            while j - 1 > i and is_heading[j - 1]:
                j -= 1  # headings open the next chunk rather than close this one
            tokens = count(render(prefix, start, pieces[j - 1][1]))
        return j, tokens

    spans: list[ChunkSpan] = []
    i = 0
    while i < len(pieces):
        body_start = pieces[i][0]
        overlap = body_start
        if spans and overlap_tokens:
            overlap = _overlap_start(text, spans[-1].body_start, body_start, count, overlap_tokens,
                                     sentence_starts)
        options = []
        for start in dict.fromkeys((overlap, body_start)):
            heading = outline.path(start)
            if heading and count(heading) <= max_tokens // 4:
                options.append((heading, start))
            options.append(("", start))
        # The first option whose chunk holds more than headings; the bare piece always fits.
        chosen = None
        for prefix, start in options:
            packed = pack(i, prefix, start)
            if packed is None:
                continue
            chosen = chosen or (prefix, start, *packed)
            if packed[0] == len(pieces) or not all(is_heading[i:packed[0]]):
                chosen = (prefix, start, *packed)
                break
        assert chosen is not None  # pieces fit max_tokens on their own
        prefix, start, j, tokens = chosen
        spans.append(ChunkSpan(start, body_start, pieces[j - 1][1], prefix, tokens))
        i = j
    return spans


def chunk_text(text: str, *, max_tokens: int, overlap_tokens: int = 32,
               count_tokens: Callable[[str], int] | None = None, doc: str = "") -> list[Chunk]:
    """Cut ``text`` into chunks of at most ``max_tokens`` tokens each.

    Cuts follow Markdown structure first (headings, blank-line paragraphs; none
    at a blank line inside a code fence), then sentences and lines, then words;
    a single word longer than the budget is the only thing ever cut mid-word.
    Pieces are packed
    greedily; each chunk after the first repeats up to ``overlap_tokens`` tokens
    (whole words, at most half the budget) of the one before, and starts with the path of headings above
    it when that fits in a quarter of the budget. ``count_tokens`` defaults to
    ``estimate_tokens``; every chunk's ``tokens`` is ``count_tokens(chunk.text)``
    and never exceeds ``max_tokens``. Same input, same chunks.
    """
    count = count_tokens or estimate_tokens
    chunks = []
    for index, span in enumerate(chunk_spans(text, max_tokens=max_tokens, overlap_tokens=overlap_tokens,
                                             count_tokens=count)):
        body = text[span.start:span.end].strip()
        chunk = f"{span.heading}\n\n{body}" if span.heading else body
        chunks.append(Chunk(doc, index, chunk, span.tokens))
    return chunks


def chunk_documents(docs: list[Document], *, max_tokens: int, overlap_tokens: int = 32,
                    count_tokens: Callable[[str], int] | None = None) -> list[Chunk]:
    """``chunk_text`` over each document in turn; ``Chunk.index`` counts within a document."""
    return [chunk for doc in docs for chunk in chunk_text(doc.text, max_tokens=max_tokens,
                                                           overlap_tokens=overlap_tokens,
                                                           count_tokens=count_tokens, doc=doc.source)]
