"""qna.yaml fuzzing: every leaf, however hostile, is a report on that file (exit 0 or 1), never a traceback."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import properties, strategies
from tests.fuzz.settings import ci

FORMATS = st.sampled_from(["text"] * 3 + ["json", "github"])


@ci(3000)
@given(strategies.qna_file(), FORMATS)
def test_validate_any_leaf(leaf, fmt):
    where, data = leaf
    properties.check_validate(where, data, fmt)
