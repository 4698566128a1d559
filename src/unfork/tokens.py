"""Token counts without a tokenizer, for budgets that must not overflow a model's context."""

from __future__ import annotations

import math


def estimate_tokens(text: str) -> int:
    """A conservative token count: one token per 3 bytes of UTF-8, rounded up.

    English runs near 4 characters per token, so this over-counts it; CJK text
    (3 bytes a character) comes out near one token a character. Where a real
    tokenizer or the server's /tokenize is at hand, callers ask it instead.
    """
    return math.ceil(len(text.encode("utf-8")) / 3)
