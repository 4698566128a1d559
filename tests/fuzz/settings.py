"""The fuzz tests' budget: enough inputs to catch a regression, few enough for CI (about 3 minutes for all four).

``UNFORK_TEST_FUZZ_SCALE`` multiplies it; ``bench/fuzz.py`` runs the same properties with many more.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings


def ci(examples: int) -> settings:
    """Derandomized, so CI sees the same inputs every run; the bench varies the seed."""
    scale = float(os.environ.get("UNFORK_TEST_FUZZ_SCALE", "1"))
    return settings(max_examples=max(1, int(examples * scale)), deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck), print_blob=True)
