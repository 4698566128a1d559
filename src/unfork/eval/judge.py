"""A judge model behind any OpenAI-compatible endpoint: scores answers 1-10, or checks them against a reference.

Small local judges do not follow formats reliably, so the verdict parsers
accept the common ways of writing one ("Rating: [[7]]", "7/10", "Score: 7",
``{"score": 7}``, "Verdict: incorrect", reasoning first and the verdict last).
When nothing can be read, the judge is asked once more at temperature 0 with a
stricter reminder; after that the verdict is ``None`` and counted, so a report
can say how much of a score rests on unreadable output.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

SCORE_SYSTEM = "You are a strict, fair grader of answers written by AI assistants."

SCORE_PROMPT = """Grade the assistant's answer to the question below.

[QUESTION]
{question}
[END OF QUESTION]
{reference_block}
[ANSWER]
{answer}
[END OF ANSWER]

Judge how helpful, correct, relevant and complete the answer is{reference_hint}. Give 1 to an answer that is wrong, empty or off-topic, 5 to one that is partly right, and 10 to one that is fully correct and does what the question asks.

Write one or two sentences of explanation, then the grade on its own last line, exactly like this:
Rating: [[7]]"""

REFERENCE_BLOCK = """
[REFERENCE ANSWER]
{reference}
[END OF REFERENCE ANSWER]
"""

AGREE_PROMPT = """Does the answer below state the same fact as the reference answer?

[QUESTION]
{question}
[END OF QUESTION]

[REFERENCE ANSWER]
{reference}
[END OF REFERENCE ANSWER]

[ANSWER]
{answer}
[END OF ANSWER]

The answer is correct if it agrees with the reference on what the question asks about, even when worded differently or shorter. It is incorrect if it contradicts the reference, gives a different fact, or does not answer.

Write one sentence of explanation, then the verdict on its own last line, exactly like this:
Verdict: [[correct]]   or   Verdict: [[incorrect]]"""

SCORE_REMINDER = "Reply with the grade only, one number from 1 to 10, exactly in this format: Rating: [[N]]"
AGREE_REMINDER = "Reply with the verdict only, exactly one of: Verdict: [[correct]]  or  Verdict: [[incorrect]]"

# Strongest evidence first; within a pattern the last match wins, since judges reason before their verdict.
_NUM = r"(\d+(?:\.\d+)?)"
_SCORE_PATTERNS = [
    re.compile(r"\[\[\s*" + _NUM + r"\s*(?:/\s*10)?\s*\]\]"),
    re.compile(r"\"(?:score|rating|grade)\"\s*:\s*\"?" + _NUM, re.I),
    re.compile(r"\b(?:score|rating|grade|mark)\b[*_\s]*(?:is|of)?\s*[:=]?[*_\s]*\[?\s*" + _NUM
               + r"(?:\s*(?:/|out of)\s*10)?", re.I),
    re.compile(_NUM + r"\s*(?:/|out of)\s*10\b", re.I),
]
_BARE_NUMBER = re.compile(r"^\W*" + _NUM + r"\W*$")

_NEGATIVE = r"incorrect|not\s+correct|wrong|false|disagrees?|does\s+not\s+agree|doesn't\s+agree|inaccurate"
_POSITIVE = r"correct|right|true|agrees|accurate"
_AGREE_LABELLED = re.compile(r"\[\[\s*(" + _NEGATIVE + "|" + _POSITIVE + r")\s*\]\]"
                             r"|\b(?:verdict|judg(?:e)?ment|answer is|conclusion|result)\b[*_\s]*[:=]?[*_\s\"']*(?:\[\[)?\s*("
                             + _NEGATIVE + "|" + _POSITIVE + r")\b", re.I)
_AGREE_ANY = re.compile(r"\b(" + _NEGATIVE + "|" + _POSITIVE + r"|yes|no)\b", re.I)


def parse_score(text: str | None, low: int = 1, high: int = 10) -> float | None:
    """The 1-10 grade in a judge's reply, or None when there is none (or it is out of range)."""
    if not text:
        return None
    text = text.strip()
    found = _json_field(text, ("score", "rating", "grade"))
    if isinstance(found, (int, float)) and not isinstance(found, bool):
        return _in_range(float(found), low, high)
    for pattern in _SCORE_PATTERNS:
        matches = pattern.findall(text)
        if matches:
            return _in_range(float(matches[-1]), low, high)
    bare = _BARE_NUMBER.match(text)
    return _in_range(float(bare.group(1)), low, high) if bare else None


def _in_range(value: float, low: int, high: int) -> float | None:
    if not low <= value <= high:
        return None
    return int(value) if value == int(value) else value


def parse_agreement(text: str | None) -> bool | None:
    """True for "correct", False for "incorrect", None when the reply says neither clearly."""
    if not text:
        return None
    found = _json_field(text, ("correct", "verdict", "is_correct"))
    if isinstance(found, bool):
        return found
    if isinstance(found, str) and found.strip():
        return parse_agreement(found)
    labelled = _AGREE_LABELLED.findall(text)
    if labelled:
        a, b = labelled[-1]
        return _is_positive(a or b)
    words = [w for w in _AGREE_ANY.findall(text)]
    if not words:
        return None
    if len(words) == 1 or len(set(map(_is_positive, words))) == 1:
        return _is_positive(words[-1])
    # Mixed words without a labelled verdict: trust only a reply whose last line is a bare verdict.
    last = text.strip().splitlines()[-1]
    tail = _AGREE_ANY.findall(last)
    return _is_positive(tail[-1]) if len(tail) == 1 and len(last.split()) <= 4 else None


def _is_positive(word: str) -> bool:
    w = " ".join(word.lower().split())
    return not (re.fullmatch(_NEGATIVE, w) or w == "no")


def _json_field(text: str, keys: Sequence[str]) -> Any:
    """The value of the first of ``keys`` in a JSON object inside ``text`` (fenced or not)."""
    for raw in re.findall(r"\{[^{}]*\}", text):
        try:
            obj = json.loads(raw)
        except ValueError:
            continue
        if isinstance(obj, dict):
            for k in keys:
                if k in obj:
                    return obj[k]
    return None


@dataclass
class Verdict:
    value: float | bool | None  # a 1-10 score, correct/incorrect, or None when unreadable
    raw: str                    # the judge's reply (the retry's, when there was one)
    retried: bool = False


@dataclass
class Judge:
    """Asks a judge model through an async OpenAI-compatible client; counts what it could not read."""

    client: Any  # unfork.client.OpenAIClient (or anything with the same async ``chat``)
    model: str | None = None
    label: str = ""
    max_concurrency: int = 4
    max_tokens: int = 200
    verdicts: int = 0
    unparseable: int = 0
    retries: int = 0
    _loop: Any = field(default=None, repr=False)

    def summary(self, verdicts: Sequence[Verdict] | None = None) -> dict[str, Any]:
        """Counts over ``verdicts``, or over everything this judge said so far."""
        if verdicts is None:
            total, bad, retried = self.verdicts, self.unparseable, self.retries
        else:
            total, bad = len(verdicts), sum(v.value is None for v in verdicts)
            retried = sum(v.retried for v in verdicts)
        return {"model": self.label or self.model, "verdicts": total, "unparseable": bad,
                "unparseable_share": round(bad / total, 4) if total else 0.0, "retries": retried}

    def score(self, items: Sequence[tuple[str, str, str | None]]) -> list[Verdict]:
        """Grade each ``(question, answer, reference or None)`` from 1 to 10."""
        prompts = [_score_prompt(q, a, r) for q, a, r in items]
        return self._run(self._all(prompts, parse_score, SCORE_REMINDER))

    def agree(self, items: Sequence[tuple[str, str, str]]) -> list[Verdict]:
        """For each ``(question, answer, reference)``: does the answer agree with the reference?"""
        prompts = [AGREE_PROMPT.format(question=q.strip(), reference=r.strip(), answer=a.strip() or "(no answer)")
                   for q, a, r in items]
        return self._run(self._all(prompts, parse_agreement, AGREE_REMINDER))

    def _run(self, coro: Any) -> Any:
        # One private loop for the judge's life: the client's HTTP pool belongs to the loop it started on.
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coro)

    async def _all(self, prompts: list[str], parse: Any, reminder: str) -> list[Verdict]:
        sem = asyncio.Semaphore(max(1, self.max_concurrency))

        async def one(prompt: str) -> Verdict:
            async with sem:
                return await self._ask(prompt, parse, reminder)

        out = list(await asyncio.gather(*(one(p) for p in prompts)))
        self.verdicts += len(out)
        self.unparseable += sum(v.value is None for v in out)
        return out

    async def _ask(self, prompt: str, parse: Any, reminder: str) -> Verdict:
        from unfork.client import ContextOverflowError

        # Stopping at "]]" ends the reply with the verdict: small judges often ramble on after it.
        messages = [{"role": "system", "content": SCORE_SYSTEM}, {"role": "user", "content": prompt}]
        try:
            first = _closed(await self.client.chat(messages, model=self.model, temperature=0.0,
                                                   max_tokens=self.max_tokens, stop=["]]"]))
        except ContextOverflowError as exc:  # one over-long answer must not stop the whole benchmark
            return Verdict(None, f"error: {exc}")
        value = parse(first)
        if value is not None:
            return Verdict(value, first)
        self.retries += 1
        messages += [{"role": "assistant", "content": first}, {"role": "user", "content": reminder}]
        second = _closed(await self.client.chat(messages, model=self.model, temperature=0.0, max_tokens=40,
                                                stop=["]]"]))
        return Verdict(parse(second), f"{first}\n---retry---\n{second}", retried=True)

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            if hasattr(self.client, "aclose"):
                self._loop.run_until_complete(self.client.aclose())
            self._loop.close()


def _closed(result: Any) -> str:
    """The reply's text with the "]]" that the stop sequence cut off put back."""
    text = result.text
    return text + "]]" if text.rfind("[[") > text.rfind("]]") else text


def _score_prompt(question: str, answer: str, reference: str | None) -> str:
    ref = reference.strip() if reference else ""
    return SCORE_PROMPT.format(
        question=question.strip(), answer=answer.strip() or "(no answer)",
        reference_block=REFERENCE_BLOCK.format(reference=ref) if ref else "",
        reference_hint=", using the reference answer as the standard of a correct answer" if ref else "")


@contextlib.contextmanager
def open_judge(endpoint_url: str | None = None, model: str | None = None, api_key: str | None = None, *,
               max_concurrency: int = 4) -> Iterator[Judge]:
    """A judge at ``endpoint_url``, or the configured teacher on a temporary local server (stopped after)."""
    from unfork.client import ClientSettings, OpenAIClient

    if endpoint_url:
        client = OpenAIClient(ClientSettings(endpoint_url, api_key=api_key, max_concurrency=max_concurrency))
        judge = Judge(client, model, label=model or endpoint_url, max_concurrency=max_concurrency)
        try:
            yield judge
        finally:
            judge.close()
        return
    from unfork.config import load_config
    from unfork.serve.launch import running_server

    name = model or load_config().models.teacher
    with running_server(name, parallel=max_concurrency, slot_ctx=4096) as ep:
        client = OpenAIClient(ClientSettings(ep.base_url, api_key=ep.api_key, max_concurrency=max_concurrency))
        judge = Judge(client, ep.model, label=name, max_concurrency=max_concurrency)
        try:
            yield judge
        finally:
            judge.close()
