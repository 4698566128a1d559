"""Chunking knowledge documents: pinned chunks of the example document and properties of any text."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unfork.documents.chunk import Chunk, chunk_documents, chunk_spans, chunk_text
from unfork.documents.convert import Document
from unfork.taxonomy.examples import EXAMPLE_DOCUMENT
from unfork.tokens import estimate_tokens

# ------------------------------------------------------------------------ chunking

MARROWVEY = (EXAMPLE_DOCUMENT / "marrowvey.md").read_text(encoding="utf-8")


def _word_count(text: str) -> int:
    return len(text.split())


def _bos_word_count(text: str) -> int:
    """Not additive: punctuation counts apart and every text pays one start token."""
    return len(re.findall(r"\w+|[^\w\s]", text)) + 1


def test_example_document_chunks_are_pinned():
    chunks = chunk_text(MARROWVEY, max_tokens=256, doc="marrowvey.md")
    assert len(chunks) == 24
    assert [c.index for c in chunks] == list(range(24))
    assert all(c.doc == "marrowvey.md" and c.tokens == estimate_tokens(c.text) <= 256 for c in chunks)
    assert chunks[0].text.startswith("# Marrowvey Island and the Glasslight Festival\n\nMarrowvey is")
    assert chunks[-1].text.endswith(MARROWVEY.strip()[-60:])


def test_chunks_carry_their_heading_path():
    chunks = chunk_text(MARROWVEY, max_tokens=200, overlap_tokens=0)
    geography = [c for c in chunks if "212 square kilometres" in c.text or "1,340 millimetres" in c.text]
    assert geography and all(c.text.startswith("# Marrowvey Island and the Glasslight Festival\n")
                             for c in geography)
    assert any(c.text.startswith("# Marrowvey Island and the Glasslight Festival\n## Geography\n\n")
               for c in geography)
    # a heading never closes a chunk when more text follows
    assert not any(c.text.rstrip().splitlines()[-1].startswith("#") for c in chunks[:-1])


def test_a_sibling_heading_replaces_the_one_before_in_the_path():
    para = "Words of the section. " * 8
    text = f"# T\n\n## S\n\n### A\n\n{para}\n\n### B\n\n{para}\n"
    chunks = chunk_text(text, max_tokens=estimate_tokens(f"# T\n## S\n\n### A\n\n{para}"), overlap_tokens=0)
    assert [c.text.split("\n\n", 1)[0] for c in chunks] == ["# T", "# T\n## S"]
    assert chunks[1].text.startswith("# T\n## S\n\n### B\n\nWords")


def test_overlap_repeats_the_end_of_the_previous_chunk():
    spans = chunk_spans(MARROWVEY, max_tokens=200, overlap_tokens=30)
    assert spans[0].start == spans[0].body_start == 0
    overlapping = 0
    for prev, span in zip(spans, spans[1:], strict=False):
        assert prev.body_start <= span.start <= span.body_start == prev.end
        overlap = MARROWVEY[span.start:span.body_start].strip()
        if overlap:  # dropped only where it would leave a chunk holding nothing but a heading
            overlapping += 1
            assert estimate_tokens(overlap) <= 30
            assert MARROWVEY[span.start - 1].isspace()  # whole words
    assert overlapping >= 0.7 * (len(spans) - 1)


def test_a_word_longer_than_the_budget_is_the_only_mid_word_cut():
    word = "x" * 500
    text = f"Short words first. {word} and after."
    chunks = chunk_text(text, max_tokens=40, overlap_tokens=0)
    assert all(c.tokens <= 40 for c in chunks)
    assert "".join(c.text for c in chunks).replace(" ", "") == text.replace(" ", "")


def test_fenced_code_is_not_cut_at_its_blank_lines():
    text = "Intro.\n\n```python\ndef f():\n\n    return 1\n```\n\nOutro."
    spans = chunk_spans(text, max_tokens=12, overlap_tokens=0)
    fence = text.index("```python")
    assert not any(fence < s.body_start < text.index("Outro") - 2 for s in spans)


def test_empty_text_and_bad_budgets():
    assert chunk_text("", max_tokens=10) == []
    assert chunk_text(" \n\n\t", max_tokens=10) == []
    with pytest.raises(ValueError):
        chunk_text("text", max_tokens=0)
    with pytest.raises(ValueError):
        chunk_text("text", max_tokens=10, overlap_tokens=-1)
    assert [c.text for c in chunk_text("one two three", max_tokens=3, count_tokens=_word_count)] == [
        "one two three"]  # the default overlap (32) shrinks to half the budget
    with pytest.raises(ValueError, match="even one character"):
        chunk_text("text", max_tokens=1, overlap_tokens=0, count_tokens=lambda t: len(t) + 5)


def test_chunk_documents_numbers_chunks_per_document():
    docs = [Document("a.md", "One. " * 60), Document("b.md", "Two. " * 60)]
    chunks = chunk_documents(docs, max_tokens=40, overlap_tokens=4)
    for source in ("a.md", "b.md"):
        mine = [c for c in chunks if c.doc == source]
        assert [c.index for c in mine] == list(range(len(mine))) and len(mine) > 1
    assert chunks[0] == Chunk("a.md", 0, chunks[0].text, chunks[0].tokens)


_WORDS = st.one_of(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=12),
    st.sampled_from(["Marrowvey", "1,087", "e.g.", "(Port", "Sorrel)", "glass—light", "日本語", "naïve",
                     "🙂"]),
    st.text(alphabet="xyz", min_size=60, max_size=400),  # longer than small budgets
)
_SENTENCE = st.builds(lambda ws, end: " ".join(ws) + end, st.lists(_WORDS, min_size=1, max_size=25),
                      st.sampled_from([".", "!", "?", "", ":"]))
_BLOCK = st.one_of(
    st.builds(lambda ss, sep: sep.join(ss), st.lists(_SENTENCE, min_size=1, max_size=8),
              st.sampled_from([" ", "\n", "  "])),
    st.builds(lambda level, ws: "#" * level + " " + " ".join(ws), st.integers(1, 6),
              st.lists(_WORDS, min_size=1, max_size=6)),
    st.builds(lambda lines: "```\n" + "\n\n".join(lines) + "\n```",
              st.lists(_SENTENCE, min_size=1, max_size=4)),
    st.builds(lambda items: "\n".join(f"- {i}" for i in items), st.lists(_SENTENCE, min_size=1, max_size=5)),
)
_TEXT = st.builds(lambda lead, blocks, seps, tail: lead + "".join(map(str.__add__, blocks, seps)) + tail,
                  st.sampled_from(["", "\n", "  \n\n"]), st.lists(_BLOCK, max_size=12),
                  st.lists(st.sampled_from(["\n\n", "\n", "\n\n\n", " \n\n"]), min_size=12, max_size=12),
                  st.sampled_from(["", "\n", "\n\n  "]))
_COUNTERS = st.sampled_from([estimate_tokens, _word_count, _bos_word_count, len])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_TEXT, max_tokens=st.integers(8, 300), overlap=st.integers(0, 64), count=_COUNTERS)
def test_chunking_properties(text, max_tokens, overlap, count):
    overlap = min(overlap, max_tokens - 1)
    spans = chunk_spans(text, max_tokens=max_tokens, overlap_tokens=overlap, count_tokens=count)
    chunks = chunk_text(text, max_tokens=max_tokens, overlap_tokens=overlap, count_tokens=count, doc="d.md")
    assert chunks == chunk_text(text, max_tokens=max_tokens, overlap_tokens=overlap, count_tokens=count,
                                doc="d.md")  # deterministic
    if not text.strip():
        assert chunks == []
        return
    assert len(chunks) == len(spans)
    # the new parts of the chunks tile the document: no text is lost or repeated
    assert spans[0].body_start == 0 and spans[-1].end == len(text)
    assert all(a.end == b.body_start for a, b in zip(spans, spans[1:], strict=False))
    assert "".join(text[s.body_start:s.end] for s in spans) == text
    for span, chunk in zip(spans, chunks, strict=True):
        assert chunk.tokens == count(chunk.text) <= max_tokens
        assert chunk.text.strip() and chunk.doc == "d.md"
        assert span.start <= span.body_start < span.end
        assert text[span.body_start:span.end].strip()
        assert chunk.text.endswith(text[span.body_start:span.end].strip())
        if count is _word_count:  # every word fits this budget, so no cut falls inside one
            assert span.body_start == 0 or text[span.body_start - 1].isspace()
