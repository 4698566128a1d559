"""Turning the teacher's text back into columns.

Every parser takes the raw reply (and whether it was cut off by the token
limit) and returns a :class:`Parsed`: the items it could read and the reasons
for anything it could not. Parsers never raise on bad text: the engine turns
an empty result into a rejected row that keeps the raw reply.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Parsed:
    items: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one reason per dropped piece


_ITEM = re.compile(r"^\s*(?:[*_#]+\s*)?(?:(?:question|item|q)\s*)?(\d{1,3})\s*[.):\]]\s*(?:[*_]+\s*)?(.*)$", re.I)
_BULLET = re.compile(r"^\s*[-*•]\s+(.*)$")


def _clean(text: str) -> str:
    text = text.strip()
    text = re.sub(r"^(?:\*\*|__)|(?:\*\*|__)$", "", text).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1].strip()
    return text


def numbered_list(raw: str, truncated: bool, columns: list[str], **_: Any) -> Parsed:
    """``1. ...`` / ``2) ...`` / ``- ...`` items; a line without a marker continues the item above."""
    items: list[list[str]] = []
    numbered_seen = False
    for line in raw.splitlines():
        m = _ITEM.match(line)
        b = None if m or numbered_seen else _BULLET.match(line)
        if m:
            numbered_seen = True
            items.append([m.group(2)])
        elif b:
            items.append([b.group(1)])
        elif items and line.strip():
            items[-1].append(line.strip())
    out = Parsed()
    texts = [_clean(" ".join(parts)) for parts in items]
    if truncated and texts:
        texts.pop()
        out.problems.append("truncated: the last item was cut off by the token limit")
    for text in texts:
        if text:
            out.items.append({columns[0]: text})
        else:
            out.problems.append("empty item")
    if not items:
        out.problems.append("no numbered items found")
    return out


def _label_regex(labels: dict[str, list[str]]) -> re.Pattern[str]:
    names = "|".join(re.escape(w) for words in labels.values() for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"^\s*(?:[*_#>]+\s*)?({names})\s*\d*\s*(?:[*_]+\s*)?[:.)-]\s*(?:[*_]+\s*)?(.*)$", re.I)


def labeled(raw: str, truncated: bool, columns: list[str], labels: dict[str, list[str] | str] | None = None,
            **_: Any) -> Parsed:
    """Records made of labelled fields, e.g. ``Question: ...`` then ``Answer: ...``.

    ``labels`` maps each column to the label word(s) that introduce it (default:
    the column name, capitalised). A record starts again at the first column's
    label; a record missing a field is dropped with a reason.
    """
    norm = {c: ([labels[c]] if isinstance(labels[c], str) else list(labels[c])) if labels and c in labels
            else [c.replace("_", " ")] for c in columns}
    word_to_col = {w.casefold(): c for c, words in norm.items() for w in words}
    pattern = _label_regex(norm)
    records: list[dict[str, list[str]]] = []
    current: str | None = None
    for line in raw.splitlines():
        m = pattern.match(line)
        if m:
            col = word_to_col[m.group(1).casefold()]
            if col == columns[0] or not records or col in records[-1]:
                records.append({})
            records[-1][col] = [m.group(2)]
            current = col
        elif current is not None and records:
            records[-1][current].append(line)
    out = Parsed()
    if truncated and records:
        records.pop()
        out.problems.append("truncated: the last record was cut off by the token limit")
    for rec in records:
        row = {c: _clean("\n".join(rec[c])) for c in columns if c in rec}
        missing = [c for c in columns if not row.get(c)]
        if missing:
            out.problems.append(f"record without {', '.join(missing)}")
        else:
            out.items.append(row)
    if not records and not out.problems:
        out.problems.append(f"no '{norm[columns[0]][0]}:' field found")
    return out


def tagged(raw: str, truncated: bool, columns: list[str], labels: dict[str, str] | None = None, **_: Any) -> Parsed:
    """Values between ``<tag>`` and ``</tag>`` (tag: the column, or ``labels[column]``), one item per match.

    With several columns, the n-th match of each makes the n-th item. An
    opening tag without its closing tag (a reply cut short) is dropped.
    """
    found = {}
    for c in columns:
        tag = re.escape(str((labels or {}).get(c, c)))
        found[c] = [m.strip() for m in re.findall(rf"<{tag}>(.*?)</{tag}>", raw, re.S | re.I)]
    out = Parsed()
    count = max((len(v) for v in found.values()), default=0)
    for i in range(count):
        row = {c: found[c][i] for c in columns if i < len(found[c]) and found[c][i]}
        if len(row) == len(columns):
            out.items.append(row)
        else:
            out.problems.append(f"item {i + 1} lacks {', '.join(c for c in columns if c not in row)}")
    first = str((labels or {}).get(columns[0], columns[0]))
    opened = len(re.findall(rf"<{re.escape(first)}>", raw, re.I))
    if opened > count:
        out.problems.append("truncated: an item was cut off" if truncated else f"<{first}> without </{first}>")
    if not count and not out.problems:
        out.problems.append(f"no <{first}>...</{first}> found")
    return out


_REFUSAL = re.compile(r"^\s*(?:i'?m sorry|i am sorry|i cannot|i can'?t|as an ai\b|i'm unable|i am unable)", re.I)


def text(raw: str, truncated: bool, columns: list[str], **_: Any) -> Parsed:
    """The whole reply is the value of the one column."""
    value = re.sub(r"^\s*(?:response|answer)\s*:\s*", "", raw.strip(), flags=re.I).strip()
    if truncated:
        return Parsed(problems=["truncated: the reply was cut off by the token limit"])
    if not value:
        return Parsed(problems=["empty reply"])
    return Parsed(items=[{columns[0]: value}])


_INDEX = r"^\s*(?:[*_#\[]+\s*)?(?:pair|item|question|request|#)?\s*(\d{1,3})(?:\s*[.):\]=-]+\s*|\s+)"
_SCORE = re.compile(_INDEX + r"(?:[*_]+\s*)?(?:score|rating)?\s*[:=]?\s*(\d+(?:\.\d+)?)(?:\s*/\s*\d+)?", re.I)


def scores(raw: str, truncated: bool, columns: list[str], **_: Any) -> Parsed:
    """Lines ``N: score``; items are ``{"index": N, columns[0]: score}`` (N as written, 1-based)."""
    out = Parsed()
    seen: set[int] = set()
    for line in raw.splitlines():
        m = _SCORE.match(line)
        if m and int(m.group(1)) not in seen:
            seen.add(int(m.group(1)))
            out.items.append({"index": int(m.group(1)), columns[0]: float(m.group(2))})
    if not out.items:
        out.problems.append("no 'N: score' lines found")
    return out


_YES = {"yes", "y", "true", "pass", "1"}
_NO = {"no", "n", "false", "fail", "0"}


def verdicts(raw: str, truncated: bool, columns: list[str], criteria: list[str] | None = None,
             **_: Any) -> Parsed:
    """Lines ``N: faithful=yes, relevant=no, clear=yes``; items hold a dict of booleans per criterion."""
    criteria = criteria or ["ok"]
    out = Parsed()
    seen: set[int] = set()
    for line in raw.splitlines():
        m = re.match(_INDEX + "(.*)$", line, re.I)
        if not m or int(m.group(1)) in seen:
            continue
        found: dict[str, bool] = {}
        for crit in criteria:
            c = re.search(rf"{re.escape(crit)}\W{{0,4}}(\w+)", m.group(2), re.I)
            if c and c.group(1).casefold() in _YES | _NO:
                found[crit] = c.group(1).casefold() in _YES
        if len(found) == len(criteria):
            seen.add(int(m.group(1)))
            out.items.append({"index": int(m.group(1)), columns[0]: found})
    if not out.items:
        out.problems.append(f"no 'N: {'=yes/no, '.join(criteria)}=yes/no' lines found")
    return out


def is_refusal(value: str) -> bool:
    return bool(_REFUSAL.match(value))


PARSERS: dict[str, Callable[..., Parsed]] = {
    "numbered_list": numbered_list, "labeled": labeled, "tagged": tagged, "text": text, "scores": scores, "verdicts": verdicts,
}
