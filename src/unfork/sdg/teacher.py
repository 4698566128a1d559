"""The teacher as the SDG engine sees it: chat requests spread over the servers' slots, and token counts.

A server decodes as many sequences at once as it has slots. A request for
``n`` choices (the OpenAI API's ``n``) takes ``n`` of them and has its prompt
computed once for all: on a CPU, where a prompt token costs about a third of
a generated one, that is what makes wide requests pay. Such requests are
streamed, so that each slot is counted free the moment its choice ends, as the
server frees it, rather than when the longest choice does (one reply's choices
ran from 36 to 480 tokens).

Requests queue in order and go out once all their slots are free; one that
fits in the free slots may pass a head that waits for more. Splitting a
request over the slots free at the moment would cost another prompt per part
(the server shares a prompt only among the choices of one request), so only
the last request waiting does so, at the end of a run, where the slots would
otherwise idle: a request for 4 choices with 2 slots free then goes out as one
for 2 choices now and one for 2 more later, each part with its own seed. The
caller gets one reply with all its choices.
"""

from __future__ import annotations

import asyncio
import collections
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from unfork.sdg.steps import estimate_tokens

SEED_STEP = 7919  # a part's seed: the request's plus this times the number of choices asked before it


class Teacher:
    """The one interface the engine needs: ``chat`` and token counting over an OpenAI-compatible client."""

    def __init__(self, client: Any, model: str, context_window: int | None = None, capacity: int | None = None,
                 stream_choices: bool = True):
        self.client = client
        self.stream_choices = stream_choices  # stream requests for several choices, to free slots early
        self.model = model
        self.context_window = context_window
        self._can_tokenize: bool | None = None
        # per request sent: (start, end, completion tokens, prompt tokens, prompt tokens the server computed)
        self.busy: list[tuple[float, float, int, int, int]] = []
        # the sequences the servers decode at once: their slots over all endpoints
        clients = getattr(client, "clients", [client])
        self.capacity = capacity or sum(getattr(getattr(c, "settings", None), "max_concurrency", 8) for c in clients)
        self._free = self.capacity
        self.occupancy: list[tuple[float, int]] = []  # (time, slots taken) at each change
        self.max_choices: int | None = None  # choices one request may ask for, once a server said
        self._queue: collections.deque[_Waiter] = collections.deque()
        self._changed: asyncio.Condition | None = None

    async def setup(self) -> None:
        if self.context_window is None:
            self.context_window = await self.client.context_window(self.model)

    async def count_tokens(self, text: str) -> int | None:
        """Exact count from llama.cpp's ``/tokenize`` when the server has it, else None."""
        if self._can_tokenize is False:
            return None
        first = getattr(self.client, "clients", [self.client])[0]
        root = first.base_url.rsplit("/v1", 1)[0]
        try:
            data = await first._attempt_json("POST", root + "/tokenize", {"content": text}, timeout=30)
        except Exception:  # noqa: BLE001 - any failure means "no tokenizer here"
            self._can_tokenize = False
            return None
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, list):
            self._can_tokenize = False
            return None
        self._can_tokenize = True
        return len(tokens)

    async def chat(self, messages: list[dict[str, str]], **kwargs: Any) -> Any:
        """One reply with ``n`` choices (default 1): one request, or several when the request wants more
        choices than the servers have slots or than one of them takes in one request."""
        want = max(1, int(kwargs.pop("n", None) or 1))
        parts: list[asyncio.Task] = []
        asked = 0
        try:
            while asked < want:
                got = await self._take(min(want - asked, self.max_choices or want, self.capacity), first=not parts)
                parts.append(asyncio.create_task(self._send(messages, kwargs, got, asked)))
                asked += got
            results = await asyncio.gather(*parts)
        except BaseException:
            for part in parts:
                part.cancel()
            raise
        return results[0] if len(results) == 1 else merge_replies(results)

    async def _take(self, need: int, *, first: bool) -> int:
        """Wait for this request's turn (:meth:`_turn`) and take its slots: all ``need``, or, for the last
        request in the queue, the free ones. A request with parts out keeps its place at the head."""
        if self._changed is None:
            self._changed = asyncio.Condition()
        me = _Waiter(need)
        if first:
            self._queue.append(me)
        else:
            self._queue.appendleft(me)
        async with self._changed:
            try:
                await self._changed.wait_for(lambda: self._turn(me))
                passing = self._queue[0] is not me
            finally:
                self._queue.remove(me)
            if passing:
                self._queue[0].passed += 1
            got = min(need, self._free)
            self._free -= got
            self.occupancy.append((time.monotonic(), self.capacity - self._free))
            self._changed.notify_all()  # the next in line may take what is left
        return got

    def _turn(self, me: _Waiter) -> bool:
        """Requests go in order once all their slots are free: a part sent on fewer slots would have its prompt
        computed again (with a split whenever a slot freed, utilization fell to 54%). Only the last
        request waiting takes the slots that are free, since they would idle otherwise. While the head
        waits for more slots, a later request that fits in the free ones may go first, up to ``capacity``
        times."""
        head = self._queue[0]
        if head is me and len(self._queue) == 1:
            return self._free > 0
        if me.need > self._free:
            return False
        if head is me:
            return True
        if head.passed >= self.capacity:
            return False
        return next(w for w in self._queue if w.need <= self._free) is me  # the first that fits

    async def _send(self, messages: list[dict[str, str]], kwargs: dict[str, Any], slots: int, asked: int) -> Any:
        """The request's choices ``asked`` to ``asked + slots`` on ``slots`` slots: one request, or several
        when the server refuses as many choices in one (llama.cpp: at most its slots). Each slot is given
        back as its choice ends, when the reply is streamed, else when all have."""
        from unfork.client import APIError

        held = slots

        async def release(_index: int = 0) -> None:
            nonlocal held
            if held > 0:
                held -= 1
                await self._give(1)

        try:
            try:
                return await self._request(messages, part_params(kwargs, slots, asked), release)
            except APIError as exc:
                limit = choices_limit(exc)
                if limit is None or slots <= limit:
                    raise
            self.max_choices = limit
            results = await asyncio.gather(*(
                self._request(messages, part_params(kwargs, min(limit, slots - i), asked + i), release)
                for i in range(0, slots, limit)))
            return merge_replies(results)
        finally:
            await self._give(held)

    async def _give(self, slots: int) -> None:
        assert self._changed is not None
        async with self._changed:
            self._free += slots
            self.occupancy.append((time.monotonic(), self.capacity - self._free))
            self._changed.notify_all()

    async def _request(self, messages: list[dict[str, str]], params: dict[str, Any],
                       release: Callable[[int], Awaitable[None]]) -> Any:
        start = time.monotonic()
        result = None
        if self.stream_choices and params.get("n", 1) > 1:
            from unfork.client import APIError
            from unfork.client.choices import chat_choices

            try:
                result = await chat_choices(self.client, messages, model=self.model, on_finish=release, **params)
            except APIError as exc:
                if exc.status_code not in (400, 422) or "stream" not in str(exc.server_message or exc):
                    raise
                self.stream_choices = False  # a server that refuses streamed replies: ask for whole ones
        if result is None:
            result = await self.client.chat(messages, model=self.model, **params)
        completion = await self._completion_tokens(result)
        prompt = result.usage.prompt_tokens
        self.busy.append((start, time.monotonic(), completion, prompt, computed_prompt_tokens(result.raw, prompt)))
        return result

    async def _completion_tokens(self, result: Any) -> int:
        """All choices' completion tokens. llama.cpp's usage counts only the first choice's (its ``timings``
        give it away), so there each choice is counted with ``/tokenize``, plus the end token of a stop."""
        choices = result.choices
        if len(choices) < 2 or not isinstance(result.raw.get("timings"), dict):
            return result.usage.completion_tokens
        total = result.usage.completion_tokens
        for text, finish in choices[1:]:
            counted = await self.count_tokens(text)
            total += (counted if counted is not None else estimate_tokens(text)) + (finish == "stop")
        return total


@dataclass
class _Waiter:
    need: int  # slots
    passed: int = 0  # times a later request went first


def slots_busy(occupancy: list[tuple[float, int]], capacity: int, start: float, end: float) -> float:
    """The share of the slots' time from ``start`` to ``end`` that requests held them."""
    held, last, taken = 0.0, start, 0
    for t, now in occupancy:
        held += taken * (min(t, end) - last)
        last, taken = min(t, end), now
    held += taken * (end - last)
    return held / (capacity * (end - start)) if end > start and capacity else 0.0


def part_params(kwargs: dict[str, Any], size: int, asked: int) -> dict[str, Any]:
    """A part's request parameters: ``n`` = its size (left out for 1) and, after the first part, a seed moved
    by the choices asked before it, so no two parts write the same replies."""
    params = dict(kwargs)
    if size > 1:
        params["n"] = size
    if params.get("seed") is not None and asked:
        params["seed"] += SEED_STEP * asked
    return params


def merge_replies(results: list[Any]) -> Any:
    """One reply holding every part's choices (re-numbered in order) and their summed usage."""
    from unfork.client.base import ChatResult, Usage

    choices = [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
               for i, (text, finish) in enumerate(c for res in results for c in res.choices)]
    usage = Usage(sum(r.usage.prompt_tokens for r in results), sum(r.usage.completion_tokens for r in results))
    first = results[0]
    raw = {**first.raw, "choices": choices,
           "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens}}
    return ChatResult(first.text, first.finish_reason, usage, first.model, raw)


def choices_limit(exc: Any) -> int | None:
    """The most choices a server takes in one request, from its refusal of more (llama.cpp: "Field 'n': Value
    must be between 1 <= value <= 2"); None when the error is about something else."""
    if getattr(exc, "status_code", None) not in (400, 422):
        return None
    said = str(getattr(exc, "server_message", "") or exc)
    if not re.search(r"\bn\b|'n'", said):
        return None
    found = re.search(r"<=\s*value\s*<=\s*(\d+)", said)
    return max(1, int(found.group(1))) if found else 1


def computed_prompt_tokens(raw: Any, prompt_tokens: int) -> int:
    """Prompt tokens the server had to compute: llama.cpp reports in ``timings.prompt_n`` those its prompt
    cache did not already hold; other servers don't say, so all of them."""
    timings = raw.get("timings") if isinstance(raw, dict) else None
    n = timings.get("prompt_n") if isinstance(timings, dict) else None
    return n if isinstance(n, int) and 0 <= n <= prompt_tokens else prompt_tokens
