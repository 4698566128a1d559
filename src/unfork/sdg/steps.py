"""The step types a pipeline is made of.

Every step declares the columns it ``reads`` and ``writes`` (checked by
:mod:`unfork.sdg.pipeline` before anything runs) and works on the rows of one
*unit* of work: ``run(rows, unit)`` returns the rows that go on and the rows it
rejects, each rejection with a reason and, for teacher calls, the raw reply.
Leaf-level state (the near-duplicate index, the document chunks) is set up in
``prepare``; steps are built fresh for every leaf.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from unfork.sdg import parsers
from unfork.sdg.dedup import make_index, shared_words

Row = dict[str, Any]
TRACE = "_trace"  # request keys of the teacher replies a row came from


@dataclass
class StepSpec:
    name: str
    type: str
    reads: list[str]
    writes: list[str]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Reply:
    """What the engine's ``ask`` returns: the teacher's text, or why there is none."""

    text: str = ""
    finish_reason: str | None = None
    key: str = ""
    error: str | None = None  # e.g. "prompt too long: ...", "teacher error: ..."
    others: list[tuple[str, str | None]] = field(default_factory=list)  # choices 2..n: (text, finish_reason)
    cause: BaseException | None = None  # the exception behind ``error``, for callers that report it by kind

    @property
    def choices(self) -> list[tuple[str, str | None]]:
        return [(self.text, self.finish_reason), *self.others]


Ask = Callable[..., Awaitable[Reply]]


@dataclass
class Unit:
    """One unit of work: its number, its random generator, the leaf's columns and the teacher."""

    index: int
    rng: random.Random
    leaf: dict[str, Any]
    ask: Ask
    seed: int


def reject(step: str, reason: str, row: Row | None = None, raw: str | None = None) -> Row:
    out: Row = {"status": "rejected", "step": step, "reason": reason}
    if row is not None:
        out["row"] = {k: v for k, v in row.items() if k != "examples"}
    if raw is not None:
        out["raw"] = raw
    return out


class Step:
    """Base of the step types: holds the spec; ``prepare`` and ``prime`` do nothing by default."""

    options: dict[str, Any] = {}  # allowed options -> default

    def __init__(self, spec: StepSpec, templates: Any = None, system_prompt: str = ""):
        unknown = set(spec.options) - set(self.options)
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(sorted(unknown))} "
                             f"(allowed: {', '.join(sorted(self.options)) or 'none'})")
        self.spec = spec
        self.opt = {**self.options, **spec.options}
        self.templates = templates
        self.system_prompt = system_prompt

    def prepare(self, leaf: dict[str, Any], context_window: int | None) -> None:
        pass

    def prime(self, rows: list[Row]) -> None:
        pass

    def values(self, row: Row, leaf: dict[str, Any]) -> dict[str, Any]:
        """The columns this step reads, from the row first, then the leaf."""
        return {c: row[c] if c in row else leaf.get(c) for c in self.spec.reads}

    async def run(self, rows: list[Row], unit: Unit) -> tuple[list[Row], list[Row]]:
        raise NotImplementedError


class SampleStep(Step):
    """Pick ``k`` of the seed examples for this unit (0: all).

    Without ``shuffle`` the first ``k`` in file order: every prompt then starts
    the same way, which llama.cpp's prompt cache turns into skipped work.
    """

    options = {"k": 0, "shuffle": False}

    async def run(self, rows, unit):
        (src,) = self.spec.reads
        (dst,) = self.spec.writes
        out = []
        for row in rows:
            items = list(self.values(row, unit.leaf)[src] or [])
            k = self.opt["k"] or len(items)
            picked = unit.rng.sample(items, min(k, len(items))) if self.opt["shuffle"] else items[:k]
            out.append({**row, dst: picked})
        return out, []


class ChunkStep(Step):
    """Split the leaf's documents into chunks that fit the teacher; unit ``n`` gets chunk ``n mod count``."""

    options = {"max_tokens": 600, "overlap_tokens": 32, "prompt_reserve": 900}

    def prepare(self, leaf, context_window):
        from unfork.documents.chunk import chunk_text

        budget = self.opt["max_tokens"]
        if context_window:
            budget = max(64, min(budget, context_window - self.opt["prompt_reserve"]))
        self.budget = budget
        self.chunks = []
        for doc in leaf.get(self.spec.reads[0]) or []:
            self.chunks += chunk_text(doc.text, max_tokens=budget, overlap_tokens=self.opt["overlap_tokens"],
                                      doc=doc.source)
        self.chunks = [c for c in self.chunks if c.text.strip()]
        if not self.chunks:
            from unfork.errors import UserError

            raise UserError("the leaf's documents hold no text to generate from",
                            hint="check document.patterns in the qna.yaml")

    async def run(self, rows, unit):
        chunk = self.chunks[unit.index % len(self.chunks)]
        text_col, *rest = self.spec.writes
        extra = dict(zip(rest, [chunk.doc, chunk.index], strict=False))
        return [{**row, text_col: chunk.text, **extra} for row in rows], []


class LLMStep(Step):
    """One request per row: render the template, ask the teacher, parse the reply into new rows.

    ``n`` goes to the template (e.g. how many pairs to write); ``choices`` asks
    the teacher for that many replies to the one prompt (the API's ``n``), and
    every reply is parsed. A server computes the prompt once for all of them,
    which is most of the gain of sending fewer, wider requests. ``keep_truncated``
    parses a reply cut off by the token limit as if it were whole (for callers
    that check every item themselves); ``halve_long_chunks: false`` reports a
    prompt too long instead of asking about each half of its chunk; ``strip: false``
    sends the rendered template as it is, blank lines at its ends included.
    """

    options = {"template": None, "parser": "text", "temperature": 0.8, "max_tokens": 512, "n": 1,
               "labels": None, "system": None, "choices": 1, "keep_truncated": False, "halve_long_chunks": True,
               "strip": True}

    def __init__(self, spec: StepSpec, templates: Any = None, system_prompt: str = ""):
        super().__init__(spec, templates, system_prompt)
        for key in ("n", "choices", "max_tokens"):
            value = self.opt[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"'{key}' must be a whole number of at least 1, not {value!r}")

    def _messages(self, variables: dict[str, Any]) -> list[dict[str, str]]:
        prompt = self.templates.get_template(self.opt["template"]).render(**variables)
        prompt = prompt.strip() if self.opt.get("strip", True) else prompt
        system = self.opt["system"] if self.opt["system"] is not None else self.system_prompt
        return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]

    async def run(self, rows, unit):
        results = await asyncio.gather(*(self._one(row, i, unit) for i, row in enumerate(rows)))
        kept = [r for ok, _ in results for r in ok]
        rejected = [r for _, bad in results for r in bad]
        return kept, rejected

    async def _one(self, row: Row, i: int, unit: Unit, depth: int = 0) -> tuple[list[Row], list[Row]]:
        name = self.spec.name
        messages = self._messages({**self.values(row, unit.leaf), "n": self.opt["n"]})
        choices = self.opt["choices"]
        extra = {"choices": choices} if choices > 1 else {}  # without: the same request keys as before
        reply = await unit.ask(messages, temperature=self.opt["temperature"], max_tokens=self.opt["max_tokens"],
                               seed=unit.seed + 7919 * i + 104729 * depth, **extra)
        if reply.error:
            halves = self._halves(row, reply.error, depth) if self.opt["halve_long_chunks"] else []
            if halves:  # the passage is too long for this teacher: ask about each half instead
                results = [await self._one(h, i, unit, depth + 1) for h in halves]
                return [r for ok, _ in results for r in ok], [r for _, bad in results for r in bad]
            return [], [reject(name, reply.error, row)]
        trace = [*row.get(TRACE, []), reply.key]
        kept: list[Row] = []
        rejected: list[Row] = []
        for text, finish in reply.choices:
            truncated = finish == "length" and not self.opt["keep_truncated"]
            parsed = parsers.PARSERS[self.opt["parser"]](text, truncated, self.spec.writes, labels=self.opt["labels"])
            if not parsed.items and parsers.is_refusal(text):
                rejected.append(reject(name, "refusal", row, text))
                continue
            kept += [{**row, **item, TRACE: trace} for item in parsed.items]
            counts = Counter(parsed.problems)  # one rejection per kind of problem, with how often it occurred
            rejected += [reject(name, f"unparseable: {why}" + (f" (×{n})" if n > 1 else ""), row, text)
                         for why, n in counts.items()]
        return kept, rejected


    def _halves(self, row: Row, error: str, depth: int) -> list[Row]:
        """The row twice, each with half of its chunk, when the prompt overflowed because of the chunk."""
        if not error.startswith("prompt too long") or depth >= 2 \
                or "chunk" not in self.spec.reads or not row.get("chunk"):
            return []
        from unfork.documents.chunk import chunk_text
        from unfork.tokens import estimate_tokens

        text = str(row["chunk"])
        budget = max(32, estimate_tokens(text) // 2 + 16)
        pieces = chunk_text(text, max_tokens=budget, overlap_tokens=0)
        return [{**row, "chunk": p.text} for p in pieces] if 2 <= len(pieces) <= 4 else []


class JudgeStep(Step):
    """Score several rows in one request; keep those that meet the threshold.

    The template sees ``items`` (the rows' columns) plus the leaf's columns and
    the ``shared`` ones (e.g. the chunk every pair of a unit came from).
    ``parser: scores`` reads one number per item (kept when >= ``threshold``);
    ``parser: verdicts`` reads yes/no per criterion (kept when every criterion
    in ``require`` is yes). The score goes into the step's one written column.
    """

    options = {"template": None, "parser": "scores", "temperature": 0.0, "max_tokens": 256, "batch": 6,
               "threshold": 1.0, "criteria": None, "require": None, "system": None, "shared": []}

    async def run(self, rows, unit):
        size = max(1, int(self.opt["batch"]))
        groups: dict[str, list[Row]] = {}  # rows that share the 'shared' columns are judged together
        for row in rows:
            groups.setdefault(repr([row.get(c) for c in self.opt["shared"]]), []).append(row)
        batches = [g[i:i + size] for g in groups.values() for i in range(0, len(g), size)]
        results = await asyncio.gather(*(self._batch(b, i, unit) for i, b in enumerate(batches)))
        return [r for ok, _ in results for r in ok], [r for _, bad in results for r in bad]

    def _passes(self, score: Any) -> bool:
        if isinstance(score, dict):
            need = self.opt["require"] or self.opt["criteria"] or list(score)
            return all(score.get(c) for c in need)
        return score >= self.opt["threshold"]

    async def _batch(self, rows: list[Row], b: int, unit: Unit) -> tuple[list[Row], list[Row]]:
        name = self.spec.name
        (col,) = self.spec.writes
        shared = self.opt["shared"]
        item_cols = [c for c in self.spec.reads if c not in shared and any(c in r for r in rows)]
        leaf_vars = {c: rows[0].get(c, unit.leaf.get(c)) for c in self.spec.reads if c not in item_cols}
        items = [{c: r.get(c) for c in item_cols} for r in rows]
        messages = LLMStep._messages(self, {**leaf_vars, "items": items})  # same rendering rules
        reply = await unit.ask(messages, temperature=self.opt["temperature"], max_tokens=self.opt["max_tokens"],
                               seed=unit.seed + 104729 * (b + 1))
        if reply.error:
            return [], [reject(name, reply.error, r) for r in rows]
        parsed = parsers.PARSERS[self.opt["parser"]](reply.text, reply.finish_reason == "length", [col],
                                                     criteria=self.opt["criteria"])
        by_index = {it["index"]: it[col] for it in parsed.items}
        kept, rejected = [], []
        for i, row in enumerate(rows, start=1):
            if i not in by_index:
                rejected.append(reject(name, "judge gave no verdict for this item", row, reply.text))
                continue
            new = {**row, col: by_index[i], TRACE: [*row.get(TRACE, []), reply.key]}
            if self._passes(by_index[i]):
                kept.append(new)
            else:
                rejected.append(reject(name, f"below threshold ({_show(by_index[i])})", new, reply.text))
        return kept, rejected


def _show(score: Any) -> str:
    if isinstance(score, dict):
        return ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in score.items())
    return f"{score:g}"


class FilterStep(Step):
    """Cheap checks on the columns read: length in words, refusals, copies of a seed example.

    With ``grounded_in: chunk`` (a column it also reads), the ``grounded``
    columns (default ``[answer]``) must state no number or name the passage
    lacks (see :mod:`unfork.sdg.facts`); the passage itself is not word-counted.
    """

    options = {"min_words": 1, "max_words": 1000, "refusals": True, "not_seed": True, "grounded_in": None,
               "grounded": ["answer"]}

    def prepare(self, leaf, context_window):
        self.seed_texts = {str(ex.get(c, "")).strip().casefold() for ex in leaf.get("seed_examples") or []
                           for c in self.spec.reads}

    async def run(self, rows, unit):
        kept, rejected = [], []
        for row in rows:
            why = self._problem(row)
            (rejected.append(reject(self.spec.name, why, row)) if why else kept.append(row))
        return kept, rejected

    def _problem(self, row: Row) -> str | None:
        source = self.opt["grounded_in"]
        for c in self.spec.reads:
            if c == source:
                continue
            value = str(row.get(c) or "")
            words = len(value.split())
            if words < self.opt["min_words"]:
                return f"{c} too short ({words} words)"
            if words > self.opt["max_words"]:
                return f"{c} too long ({words} words)"
            if self.opt["refusals"] and parsers.is_refusal(value):
                return f"{c} is a refusal"
            if self.opt["not_seed"] and value.strip().casefold() in self.seed_texts:
                return f"{c} copies a seed example"
        if source:
            from unfork.sdg.facts import unsupported

            for c in self.opt["grounded"]:
                missing = unsupported(str(row.get(c) or ""), str(row.get(source) or ""), str(row.get("question") or ""))
                if missing:
                    return f"{c} states what the passage does not ({', '.join(missing[:3])})"
        return None


class DedupStep(Step):
    """Drop rows too close to a seed example or to a row already kept for this leaf.

    ``ignore_seed_words`` (a share, 0: off) leaves out the words found in at
    least that share of the seed examples' texts: templated requests ("Write a
    haiku about a sunset" / "... about a river") are then compared by what
    differs, instead of counting as alike for the words they share.
    """

    options = {"method": "rouge_l", "threshold": 0.7, "include_seeds": True, "ignore_seed_words": 0.0}

    def _text(self, row: Row) -> str:
        return "\n".join(str(row.get(c) or "") for c in self.spec.reads)

    def prepare(self, leaf, context_window):
        seeds = [self._text(ex) for ex in leaf.get("seed_examples") or [] if all(c in ex for c in self.spec.reads)]
        self.ignored = shared_words(seeds, float(self.opt["ignore_seed_words"]))
        self.index = make_index(self.opt["method"], float(self.opt["threshold"]), self.ignored)
        if self.opt["include_seeds"]:
            for text in seeds:
                self.index.add(text)

    def prime(self, rows):
        for row in rows:
            self.index.add(self._text(row))

    async def run(self, rows, unit):
        kept, rejected = [], []
        for row in rows:
            text = self._text(row)
            score, match = self.index.find(text)
            if match is not None and score >= self.index.threshold:
                short = " ".join(match.split())[:80]
                # one reason per step (the table of reasons groups them); the score stays with the row
                rejected.append(reject(self.spec.name, f"near-duplicate ({self.opt['method']} "
                                                       f"≥ {self.index.threshold:.2f})",
                                       {**row, "duplicate_of": short, "similarity": round(score, 3)}))
            else:
                self.index.add(text)
                kept.append(row)
        return kept, rejected


STEP_TYPES: dict[str, type[Step]] = {
    "sample": SampleStep, "chunk": ChunkStep, "llm": LLMStep, "judge": JudgeStep,
    "filter": FilterStep, "dedup": DedupStep,
}
TEMPLATED = ("llm", "judge")
