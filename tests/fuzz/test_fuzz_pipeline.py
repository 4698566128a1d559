"""Pipeline fuzzing: any change to a copied pipeline folder loads or is a PipelineError naming it; nothing is written."""

from __future__ import annotations

from hypothesis import given

from tests.fuzz import properties, strategies
from tests.fuzz.settings import ci


@ci(2500)
@given(strategies.pipeline_input())
def test_load_any_pipeline(change):
    builtin, pipeline_yaml, templates = change
    properties.check_pipeline(builtin, pipeline_yaml, templates)
