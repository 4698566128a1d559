"""Guards for YAML that unfork reads as settings (config files, profiles, pipeline files).

PyYAML's safe loader runs no code, but it can still expand aliases without bound and lets a few
constructor errors out as plain exceptions; these name both, for every reader to check the same way.
"""

from __future__ import annotations

import math
from typing import Any

# What PyYAML's constructors let out, instead of a YAMLError, for a bad explicit tag ('!!int' alone, '!!bool x').
BAD_TAG_ERRORS = (ValueError, IndexError, KeyError, AttributeError, TypeError, RecursionError)
MAX_YAML_VALUES = 100_000
"""Values a settings or pipeline file may hold with its aliases expanded: real ones hold hundreds, a bomb billions."""
ALIAS_BOMB_TEXT = f"its aliases (*name) expand to more than {MAX_YAML_VALUES:,} values, or a value contains itself"
ALIAS_BOMB_HINT = "write the values out instead of repeating them with aliases"


def expanded_size(data: Any) -> float:
    """How many values ``data`` holds with shared lists and mappings counted each time (inf if one contains itself)."""
    if not isinstance(data, (dict, list)):
        return 1
    sizes: dict[int, float] = {}
    open_: set[int] = set()
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        item, done = stack.pop()
        children = [c for c in (item.values() if isinstance(item, dict) else item) if isinstance(c, (dict, list))]
        if done:
            open_.discard(id(item))
            sizes[id(item)] = 1 + len(item) - len(children) + sum(sizes[id(c)] for c in children)
        elif id(item) in open_:
            return math.inf
        elif id(item) not in sizes:
            open_.add(id(item))
            stack.append((item, True))
            stack.extend((c, False) for c in children)
    return sizes[id(data)]
