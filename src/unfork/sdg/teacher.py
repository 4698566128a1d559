"""The teacher as the SDG engine sees it: chat requests spread over the servers' slots, and token counts.

A server decodes as many sequences at once as it has slots, and on a CPU it
delivers the most tokens per second only with every slot busy (here, 7 busy
slots of 8 gave 11% fewer than 8). A request for ``n`` choices (the OpenAI
API's ``n``) takes ``n`` slots and has its prompt computed once for all, and
the slot of its first choice keeps the prompt when the choice ends (llama.cpp
clears the others'): a later request with the same prompt lands there and
computes almost none of it again (1 token of 458).

So a request's choices need not run at once. It goes out, in order, on the
slots free at the moment (``n`` = as many as it wants, up to those); the slot
that holds its prompt goes on with its next choices as each ends (replies are
streamed, so each choice is known the moment it ends), and every other slot
it frees goes to the next request. No slot waits while a request is queued,
and each prompt is computed about once. When none is queued (the end of a
run), a free slot takes a part of the request with the most choices left,
and computes its prompt again, rather than idling. Each part has its own
seed; the caller gets one reply with all the choices in order.

Requests with the same prompt (a skill leaf's units all ask the same thing)
should meet the slot that holds it. A slot with nothing of use in it (a child
slot, cleared) takes the first queued request whose prompt no busy slot holds:
that one has to be computed somewhere anyway, while one held by a busy slot
costs nothing where it is held, once that slot ends. A first choice's slot
whose request is done takes a queued request with its prompt first. When
every queued request's prompt is held, a free slot still takes the first,
and computes its prompt again: waiting for a slot that holds it cost more
(a holder is busy with a choice for 40-60 s; with free slots waiting at most
8 s for one, most waits ran out, requests held 95% of the slots' time
instead of 98%, and a run computed 1,100 prompt tokens fewer). In one run
before this, a skill leaf's 410-token prompt was computed 6 times.
"""

from __future__ import annotations

import asyncio
import collections
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
        self._queue: collections.deque[_Job] = collections.deque()  # requests no slot has been given yet
        self._started: set[_Job] = set()  # requests with choices out or still to send
        self._held: collections.Counter[str] = collections.Counter()  # prompts in busy first-choice slots
        self._spare_waiters: list[asyncio.Future] = []  # see wait_spare

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
        """One reply with ``n`` choices (default 1), sent as one request or in parts (see the module's doc)."""
        job = _Job(messages, kwargs, max(1, int(kwargs.pop("n", None) or 1)),
                   asyncio.get_running_loop().create_future(), prompt_key(messages))
        self._queue.append(job)
        self._dispatch()
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
        return len(self._queue)

    async def wait_spare(self) -> None:
        """Until a slot ends with no request queued: a moment when more work costs nothing already asked."""
        self._spare_waiters = [w for w in self._spare_waiters if not w.done()]
        waiter = asyncio.get_running_loop().create_future()
        self._spare_waiters.append(waiter)
        await waiter

    def _dispatch(self, holds: str | None = None) -> None:
        """Give the free slots to the queued requests, each as many as it wants of them (see the module's
        doc for which first; ``holds``: the prompt one of the free slots holds); with none queued, to the
        started request with the most choices left."""
        if not self._queue:
            for waiter in self._spare_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._spare_waiters.clear()
        while self._free > 0:
            if self._queue:
                job = self._next_queued(holds)
                holds = None
            else:
                waiting = [j for j in self._started if j.left > 0]
                if not waiting:
                    return
                job = max(waiting, key=lambda j: j.left)
            slots = min(job.left, self._free)
            self._free -= slots
            self._note()
            self._start(job, slots)

    def _next_queued(self, holds: str | None) -> _Job:
        """The queued request with the prompt ``holds``, else the first whose prompt no busy slot holds,
        else the first."""
        job = next((j for j in self._queue if j.key == holds), None) if holds else None
        job = job or next((j for j in self._queue if not self._held[j.key]), self._queue[0])
        self._queue.remove(job)
        return job

    def _start(self, job: _Job, slots: int) -> None:
        """Send ``job``'s next ``slots`` choices as one part, on slots already counted as taken."""
        self._started.add(job)
        self._held[job.key] += 1
        job.left, offset = job.left - slots, job.asked
        job.asked += slots
        part = _Part(slots)
        task = asyncio.create_task(self._send(job, part, offset))
        job.parts.add(task)
        task.add_done_callback(lambda t: self._part_done(job, part, offset, t))

    def _part_done(self, job: _Job, part: _Part, offset: int, task: asyncio.Task) -> None:
        job.parts.discard(task)
        if not job.done.done():
            failed = asyncio.CancelledError() if task.cancelled() else task.exception()
            if failed is not None:
                job.done.set_exception(failed)
                self._drop(job)
            else:
                job.results[offset] = task.result()
                if job.left == 0 and not job.parts:
                    self._started.discard(job)
                    job.done.set_result(None)
        # here, not in the part's own code: a part cancelled before it ran gives its slots back too
        self._give_back(job, part, part.slots, first=True)

    def _drop(self, job: _Job) -> None:
        """A request that failed or was cancelled: nothing more of it goes out, its parts stop."""
        job.left = 0
        self._started.discard(job)
        if job in self._queue:
            self._queue.remove(job)
        for part in list(job.parts):
            part.cancel()

    def _freed(self, job: _Job, slots: int, *, holds_prompt: bool = True) -> None:
        """``slots`` of ``job``'s slots are free. Those that hold its prompt go on with its next choices, the
        rest go to the others (one that holds it, to a request with the same prompt first)."""
        more = min(slots, job.left) if holds_prompt and not job.done.done() else 0
        if more:
            self._start(job, more)
        if slots > more:
            self._free += slots - more
            self._note()
            self._dispatch(holds=job.key if holds_prompt and not more else None)

    def _give_back(self, job: _Job, part: _Part, slots: int, *, first: bool) -> None:
        """``slots`` of ``part``'s slots end; ``first``: the slot of its first choice among them, which
        holds the prompt (llama.cpp clears the others', children copied from the first, as they end)."""
        first = first and part.holder
        if first:
            part.holder = False
            self._held[job.key] -= 1
            if self._held[job.key] <= 0:
                del self._held[job.key]
        slots = min(slots, part.slots)
        if slots:
            part.slots -= slots
            self._freed(job, slots, holds_prompt=first)

    def _note(self) -> None:
        self.occupancy.append((time.monotonic(), self.capacity - self._free))

    async def _send(self, job: _Job, part: _Part, offset: int) -> Any:
        """``job``'s choices ``offset`` to ``offset + part.slots`` on ``part.slots`` slots: one request, or
        several when the server refuses as many choices in one (llama.cpp: at most its slots). Each slot is
        given back as its choice ends, when the reply is streamed, else when all have (then the first
        choice's slot among them holds the prompt, and a next part with the others' shares it)."""
        from unfork.client import APIError

        slots = part.slots
        while True:
            limit = min(self.max_choices or slots, slots)
            try:
                results = await asyncio.gather(*(
                    self._request(job.messages, part_params(job.kwargs, min(limit, slots - i), offset + i),
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


@dataclass(eq=False)
class _Job:
    """One ``chat`` call: its choices out, those still to send, and the replies of its parts."""
    messages: list[dict[str, str]]
    kwargs: dict[str, Any]
    left: int  # choices not sent yet
    done: asyncio.Future
    key: str  # the prompt's: requests with the same one share it where a slot holds it
    asked: int = 0  # choices sent: the next part's first choice (its seed's offset)
    parts: set[asyncio.Task] = field(default_factory=set)  # out now
    results: dict[int, Any] = field(default_factory=dict)  # by the part's first choice


@dataclass(eq=False)
class _Part:
    """One request (or a few, see ``_send``) for some of a job's choices."""
    slots: int  # those it still holds
    holder: bool = True  # the slot of its first choice is among them, busy with the prompt


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
