"""The teacher as the SDG engine sees it: chat requests spread over the servers' slots, and token counts.

Which request gets which slots is :mod:`unfork.sdg.scheduler`'s to decide; here
each part it returns goes out as a request (streamed when it has several
choices, so each slot is given back the moment its choice ends), with its own
seed, and the caller gets one reply with all the choices in order.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from unfork.sdg.scheduler import Part, Request, SlotScheduler
from unfork.tokens import estimate_tokens

SEED_STEP = 7919  # a part's seed: the request's plus this times the number of choices asked before it


class Teacher:
    """The one interface the engine needs: ``chat`` and token counting over an OpenAI-compatible client."""

    def __init__(self, client: Any, model: str, context_window: int | None = None, capacity: int | None = None,
                 stream_choices: bool = True, clock: Callable[[], float] = time.monotonic):
        self.client = client
        self.stream_choices = stream_choices  # stream requests for several choices, to free slots early
        self.model = model
        self.context_window = context_window
        self.clock = clock
        self._can_tokenize: bool | None = None
        # per request sent: (start, end, completion tokens, prompt tokens, prompt tokens the server computed)
        self.busy: list[tuple[float, float, int, int, int]] = []
        # the sequences the servers decode at once: their slots over all endpoints
        clients = getattr(client, "clients", [client])
        self.capacity = capacity or sum(getattr(getattr(c, "settings", None), "max_concurrency", 8) for c in clients)
        self.slots = SlotScheduler(self.capacity, clock=clock, on_spare=self._spare)
        self.max_choices: int | None = None  # choices one request may ask for, once a server said
        self._spare_waiters: list[asyncio.Future] = []  # see wait_spare

    @property
    def occupancy(self) -> list[tuple[float, int]]:
        """(time, slots taken) at each change."""
        return self.slots.occupancy

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
            data = await first.request_json("POST", root + "/tokenize", {"content": text}, timeout=30)
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
        """One reply with ``n`` choices (default 1), sent as one request or in parts (see the scheduler)."""
        n = max(1, int(kwargs.pop("n", None) or 1))
        job = _Job(messages, kwargs, asyncio.get_running_loop().create_future(), Request(prompt_key(messages), n))
        job.request.owner = job
        self._launch(self.slots.submit(job.request))
        try:
            await job.done
        except BaseException:
            self._drop(job)
            raise
        results = [job.results[k] for k in sorted(job.results)]
        return results[0] if len(results) == 1 else merge_replies(results)

    @property
    def queued(self) -> int:
        """Requests waiting for a slot."""
        return len(self.slots.queue)

    async def wait_spare(self) -> None:
        """Until a slot ends with no request queued: a moment when more work costs nothing already asked."""
        self._spare_waiters = [w for w in self._spare_waiters if not w.done()]
        waiter = asyncio.get_running_loop().create_future()
        self._spare_waiters.append(waiter)
        await waiter

    def _spare(self) -> None:
        for waiter in self._spare_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._spare_waiters.clear()

    def _launch(self, parts: list[Part]) -> None:
        """Send each part, in the scheduler's order, which is the order the server gets them."""
        for part in parts:
            job = part.request.owner
            task = asyncio.create_task(self._send(job, part))
            job.parts.add(task)
            task.add_done_callback(lambda t, job=job, part=part: self._part_done(job, part, t))

    def _part_done(self, job: _Job, part: Part, task: asyncio.Task) -> None:
        job.parts.discard(task)
        if not job.done.done():
            failed = asyncio.CancelledError() if task.cancelled() else task.exception()
            if failed is not None:
                job.done.set_exception(failed)
                self._drop(job)
            else:
                job.results[part.offset] = task.result()
                if job.request.left == 0 and not job.parts:
                    self.slots.finish(job.request)
                    job.done.set_result(None)
        # here, not in the part's own code: a part cancelled before it ran gives its slots back too
        self._give_back(job, part, part.slots, first=True)

    def _drop(self, job: _Job) -> None:
        """A request that failed or was cancelled: nothing more of it goes out, its parts stop."""
        self.slots.drop(job.request)
        for task in list(job.parts):
            task.cancel()

    def _give_back(self, job: _Job, part: Part, slots: int, *, first: bool) -> None:
        """``slots`` of ``part``'s slots end (``first``: with its first choice's), and go on to other parts."""
        self._launch(self.slots.release(part, slots, first=first, go_on=not job.done.done()))

    async def _send(self, job: _Job, part: Part) -> Any:
        """``job``'s choices ``part.offset`` on, on ``part.size`` slots: one request, or several when the
        server refuses as many choices in one (llama.cpp: at most its slots). Each slot is given back as its
        choice ends, when the reply is streamed, else when all have."""
        from unfork.client import APIError

        slots = part.size
        while True:
            limit = min(self.max_choices or slots, slots)
            try:
                results = await gather_or_cancel(*(
                    self._request(job.messages, part_params(job.kwargs, min(limit, slots - i), part.offset + i),
                                  lambda index=0: self._give_back(job, part, 1, first=index == 0))
                    for i in range(0, slots, limit)))
                return results[0] if len(results) == 1 else merge_replies(results)
            except APIError as exc:
                said = choices_limit(exc)
                if said is None or said >= limit:
                    raise
                self.max_choices = said

    async def _request(self, messages: list[dict[str, str]], params: dict[str, Any],
                       release: Callable[[int], None]) -> Any:
        start = self.clock()
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
        self.busy.append((start, self.clock(), completion, prompt, computed_prompt_tokens(result.raw, prompt)))
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


@dataclass(eq=False)
class _Job:
    """One ``chat`` call: what it asks, its parts out now and their replies; ``request`` is the scheduler's."""
    messages: list[dict[str, str]]
    kwargs: dict[str, Any]
    done: asyncio.Future
    request: Request
    parts: set[asyncio.Task] = field(default_factory=set)  # out now
    results: dict[int, Any] = field(default_factory=dict)  # by the part's first choice


async def gather_or_cancel(*aws: Any) -> list[Any]:
    """``asyncio.gather``, except that on the first failure the others are cancelled and awaited, not left running."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def slots_busy(occupancy: list[tuple[float, int]], capacity: int, start: float, end: float) -> float:
    """The share of the slots' time from ``start`` to ``end`` that requests held them."""
    held, last, taken = 0.0, start, 0
    for t, now in occupancy:
        held += taken * (min(t, end) - last)
        last, taken = min(t, end), now
    held += taken * (end - last)
    return held / (capacity * (end - start)) if end > start and capacity else 0.0


def prompt_key(messages: list[dict[str, str]]) -> str:
    """The prompt as one string: equal for equal prompts (a dict key; Python hashes it once)."""
    return json.dumps(messages, sort_keys=True, ensure_ascii=False)


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
