"""The one token estimate: pinned, since document chunks (and so datasets) depend on it."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unfork.tokens import estimate_tokens


@pytest.mark.parametrize(("text", "tokens"), [
    ("", 0),
    ("a", 1),
    ("abc", 1),
    ("abcd", 2),
    ("naïve", 2),  # 6 bytes
    ("日本語", 3),  # 9 bytes
])
def test_the_estimate_is_pinned(text, tokens):
    assert estimate_tokens(text) == tokens


@given(st.text())
def test_a_third_of_the_utf8_bytes_rounded_up(text):
    assert estimate_tokens(text) == math.ceil(len(text.encode("utf-8")) / 3)
