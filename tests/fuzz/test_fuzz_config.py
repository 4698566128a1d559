"""Config fuzzing: any config file and UNFORK_* values give the settings or an error naming the file or variable."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import properties, strategies
from tests.fuzz.settings import ci

config_bytes = st.one_of(st.none(), strategies.config_text().map(lambda t: strategies.encode(t, "utf-8")),
                         st.binary(max_size=300))


@ci(4000)
@given(config_bytes, strategies.environment)
def test_config_show_any_settings(text, env):
    properties.check_config(text, env)
