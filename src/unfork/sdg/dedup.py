"""Near-duplicate detection: ROUGE-L (exact, with a cheap upper bound) and MinHash.

Both keep an index of the texts accepted so far and answer "is this new text
too close to one of them?" with the best score and the text it matched.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections import Counter
from dataclasses import dataclass, field

_WORD = re.compile(r"\w+", re.UNICODE)


def tokens(text: str, ignore: frozenset[str] = frozenset()) -> list[str]:
    """Lower-cased words, without those in ``ignore`` unless nothing else is left."""
    words = _WORD.findall(text.casefold())
    if ignore:
        kept = [w for w in words if w not in ignore]
        return kept or words
    return words


def shared_words(texts: list[str], share: float) -> frozenset[str]:
    """Words found in at least ``share`` of ``texts``: a task's template ("write a haiku about"), not its content.

    Empty for fewer than three texts, where one shared word says nothing about a template.
    """
    if share <= 0 or len(texts) < 3:
        return frozenset()
    counts = Counter(w for t in texts for w in set(tokens(t)))
    return frozenset(w for w, n in counts.items() if n >= share * len(texts))


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence (two-row dynamic programme)."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def _f1(common: int, la: int, lb: int) -> float:
    if common == 0 or la == 0 or lb == 0:
        return 0.0
    p, r = common / la, common / lb
    return 2 * p * r / (p + r)


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F1 between two texts, on lower-cased word tokens."""
    ta, tb = tokens(a), tokens(b)
    return _f1(lcs_length(ta, tb), len(ta), len(tb))


@dataclass
class RougeIndex:
    """Texts kept so far; ``find`` returns the closest one by ROUGE-L F1.

    The LCS can never exceed the size of the two token multisets'
    intersection, so most candidates are ruled out without the quadratic
    dynamic programme.
    """

    threshold: float = 0.7
    ignore: frozenset[str] = frozenset()
    items: list[tuple[str, list[str], Counter]] = field(default_factory=list)

    def add(self, text: str) -> None:
        t = tokens(text, self.ignore)
        self.items.append((text, t, Counter(t)))

    def find(self, text: str) -> tuple[float, str | None]:
        t = tokens(text, self.ignore)
        c = Counter(t)
        best, match = 0.0, None
        for other, ot, oc in self.items:
            bound = _f1(sum((c & oc).values()), len(t), len(ot))
            if bound < self.threshold or bound <= best:
                continue
            score = _f1(lcs_length(t, ot), len(t), len(ot))
            if score > best:
                best, match = score, other
        return best, match


_MASK = (1 << 61) - 1


def _shingles(text: str, k: int, ignore: frozenset[str] = frozenset()) -> set[str]:
    t = tokens(text, ignore)
    if len(t) <= k:
        return {" ".join(t)} if t else set()
    return {" ".join(t[i:i + k]) for i in range(len(t) - k + 1)}


@dataclass
class MinHashIndex:
    """Jaccard similarity of word ``k``-shingles estimated with MinHash and LSH buckets.

    ``num_perm`` hash functions split into ``bands``; two texts become
    candidates when one band agrees, then their estimated Jaccard is compared
    with ``threshold``.
    """

    threshold: float = 0.6
    num_perm: int = 64
    bands: int = 16
    k: int = 3
    ignore: frozenset[str] = frozenset()
    items: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    buckets: dict[tuple[int, bytes], list[int]] = field(default_factory=dict)

    def signature(self, text: str) -> tuple[int, ...]:
        sig = [_MASK] * self.num_perm
        for sh in _shingles(text, self.k, self.ignore):
            digest = hashlib.blake2b(sh.encode(), digest_size=8).digest()
            (h,) = struct.unpack("<Q", digest)
            for i in range(self.num_perm):
                v = ((h * (2 * i + 1) + i * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) % _MASK
                if v < sig[i]:
                    sig[i] = v
        return tuple(sig)

    def _band_keys(self, sig: tuple[int, ...]) -> list[tuple[int, bytes]]:
        rows = self.num_perm // self.bands
        return [(b, struct.pack(f"<{rows}Q", *sig[b * rows:(b + 1) * rows])) for b in range(self.bands)]

    def add(self, text: str) -> None:
        sig = self.signature(text)
        idx = len(self.items)
        self.items.append((text, sig))
        for key in self._band_keys(sig):
            self.buckets.setdefault(key, []).append(idx)

    def find(self, text: str) -> tuple[float, str | None]:
        sig = self.signature(text)
        seen: set[int] = set()
        best, match = 0.0, None
        for key in self._band_keys(sig):
            for idx in self.buckets.get(key, ()):
                if idx in seen:
                    continue
                seen.add(idx)
                other, osig = self.items[idx]
                score = sum(x == y for x, y in zip(sig, osig, strict=True)) / self.num_perm
                if score > best:
                    best, match = score, other
        return best, match


def make_index(method: str, threshold: float, ignore: frozenset[str] = frozenset()) -> RougeIndex | MinHashIndex:
    if method == "rouge_l":
        return RougeIndex(threshold=threshold, ignore=ignore)
    if method == "minhash":
        return MinHashIndex(threshold=threshold, ignore=ignore)
    raise ValueError(f"unknown near-duplicate method {method!r} (rouge_l or minhash)")
