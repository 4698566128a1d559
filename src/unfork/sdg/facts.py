"""A cheap faithfulness check without a judge: the numbers and names an answer states must be in its source.

Small teachers invent figures and names ("about 1,000 people" for an island of
14,620). Any number, or capitalised name that is not at the start of a
sentence, in the answer but not in the passage (or the question) marks the
answer as unsupported. It cannot catch a wrong pairing of true facts; the
judge of the full pipeline can.
"""

from __future__ import annotations

import re

_NUMBER = re.compile(r"\d[\d,.]*\d|\d")
_NAME = re.compile(r"(?<![.!?:]\s)(?<!^)\b[A-Z][a-z]+(?:[' -][A-Z][a-z]+)*")


def _numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in _NUMBER.findall(text)}


def _words(text: str) -> set[str]:
    return {w.casefold() for w in re.findall(r"\w+", text)}


def unsupported(answer: str, source: str, question: str = "") -> list[str]:
    """The numbers and names of ``answer`` found in neither ``source`` nor ``question``."""
    known_numbers = _numbers(source) | _numbers(question)
    known_words = _words(source) | _words(question)
    missing = [n for n in sorted(_numbers(answer)) if n not in known_numbers]
    for line in answer.splitlines():
        for name in _NAME.findall(line.strip()):
            if any(w.casefold() not in known_words for w in re.findall(r"\w+", name)):
                missing.append(name)
    return list(dict.fromkeys(missing))
