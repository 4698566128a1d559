"""The one token estimate: pinned so that chunks and the sdg engine's prompt check never move."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unfork.tokens import estimate_tokens


@pytest.mark.parametrize(("text", "by_bytes", "by_chars"), [
    ("", 0, 1),
    ("a", 1, 1),
    ("abc", 1, 2),
    ("abcd", 2, 2),
    ("naïve", 2, 2),  # 6 bytes, 5 characters
    ("日本語", 3, 2),  # 9 bytes, 3 characters
])
def test_both_counts_are_pinned(text, by_bytes, by_chars):
    assert estimate_tokens(text) == by_bytes
    assert estimate_tokens(text, count="bytes") == by_bytes
    assert estimate_tokens(text, count="chars") == by_chars


@given(st.text())
def test_bytes_rounds_up_and_chars_is_a_third_plus_one(text):
    assert estimate_tokens(text) == math.ceil(len(text.encode("utf-8")) / 3)
    assert estimate_tokens(text, count="chars") == len(text) // 3 + 1


def test_an_unknown_count_is_refused():
    with pytest.raises(ValueError, match="'bytes' or 'chars'"):
        estimate_tokens("x", count="words")  # type: ignore[arg-type]
