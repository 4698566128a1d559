"""Training-data fuzzing: any JSONL file gives usable rows or a UserError naming the file and its lines."""

from __future__ import annotations

from hypothesis import given

from tests.fuzz import properties, strategies
from tests.fuzz.settings import ci


@ci(4000)
@given(strategies.jsonl_file)
def test_read_any_jsonl(data):
    properties.check_jsonl(data)
