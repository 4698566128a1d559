"""Which teacher request gets which server slots: the decisions alone, with no HTTP and no asyncio.

A server decodes as many sequences at once as it has slots, and delivers the
most tokens per second only with every slot busy. A request for ``n`` choices
(the OpenAI API's ``n``) takes ``n`` slots and has its prompt computed once for
all, and the slot of its first choice keeps the prompt when the choice ends
(llama.cpp clears the others'): a later request with the same prompt lands
there and computes almost none of it again.

So a request's choices need not run at once. It goes out, in order, on the
slots free at the moment (a part of ``n`` = as many as it wants, up to those);
the slot that holds its prompt goes on with its next choices as each ends, and
every other slot it frees goes to the next request. No slot waits while a
request is queued, and each prompt is computed about once. When none is queued
(the end of a run), a free slot takes a part of the started request with the
most choices left, and computes its prompt again, rather than idling.

Requests with the same prompt should meet the slot that holds it. A slot with
nothing of use in it (a child slot, cleared) takes the first queued request
whose prompt no busy slot holds: that one has to be computed somewhere anyway,
while one held by a busy slot costs nothing where it is held, once that slot
ends. A first choice's slot whose request is done takes a queued request with
its prompt first. When every queued request's prompt is held, a free slot
still takes the first, and computes its prompt again, because waiting for a
holder (busy with a long choice) costs more slot time than the prompt.

The caller sends each :class:`Part` that :meth:`SlotScheduler.submit` and
:meth:`SlotScheduler.release` return, in the order returned, and reports the
slots of each as they end.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class Request:
    """One request for ``left`` choices of the prompt ``key``, as the scheduler tracks it."""
    key: str  # the prompt's: requests with the same one share it where a slot holds it
    left: int  # choices not sent yet
    asked: int = 0  # choices sent: the next part's first choice (its seed's offset)
    owner: Any = None  # the caller's own record of the request, so a part leads back to it


@dataclass(eq=False)
class Part:
    """Some of a request's choices, sent at once on slots already counted as taken."""
    request: Request
    offset: int  # its first choice among the request's, which moves its seed
    size: int  # its choices, one slot each
    slots: int = field(init=False)  # those it still holds
    holder: bool = True  # the slot of its first choice is among them, busy with the prompt

    def __post_init__(self) -> None:
        self.slots = self.size


class SlotScheduler:
    """The servers' ``capacity`` slots, the queued and started requests, and the prompts busy slots hold."""

    def __init__(self, capacity: int, *, clock: Callable[[], float] = time.monotonic,
                 on_spare: Callable[[], None] | None = None):
        self.capacity = capacity
        self.free = capacity
        self.clock = clock
        self.on_spare = on_spare  # called when slots free up with no request queued
        self.queue: collections.deque[Request] = collections.deque()  # requests no slot has been given yet
        self.started: dict[Request, None] = {}  # requests with choices out or still to send, in start order
        self.held: collections.Counter[str] = collections.Counter()  # prompts in busy first-choice slots
        self.occupancy: list[tuple[float, int]] = []  # (time, slots taken) at each change

    def submit(self, request: Request) -> list[Part]:
        """Queue ``request``; the parts to send now."""
        self.queue.append(request)
        return self._dispatch()

    def release(self, part: Part, slots: int, *, first: bool, go_on: bool = True) -> list[Part]:
        """``slots`` of ``part``'s slots end; ``first``: the slot of its first choice is among them (it holds
        the prompt; llama.cpp clears the others' as they end); ``go_on``: the request still wants replies.
        Returns the parts to send now on the freed slots."""
        request = part.request
        first = first and part.holder
        if first:
            part.holder = False
            self.held[request.key] -= 1
            if self.held[request.key] <= 0:
                del self.held[request.key]
        slots = min(slots, part.slots)
        if not slots:
            return []
        part.slots -= slots
        return self._freed(request, slots, holds_prompt=first, go_on=go_on)

    def finish(self, request: Request) -> None:
        """``request`` has every reply: it is no longer a started one."""
        self.started.pop(request, None)

    def drop(self, request: Request) -> None:
        """A request that failed or was cancelled: nothing more of it goes out."""
        request.left = 0
        self.started.pop(request, None)
        if request in self.queue:
            self.queue.remove(request)

    def _freed(self, request: Request, slots: int, *, holds_prompt: bool, go_on: bool) -> list[Part]:
        """Those that hold ``request``'s prompt go on with its next choices, the rest go to the others (one
        that holds it, to a request with the same prompt first)."""
        more = min(slots, request.left) if holds_prompt and go_on else 0
        parts = [self._start(request, more)] if more else []
        if slots > more:
            self.free += slots - more
            self._note()
            parts += self._dispatch(holds=request.key if holds_prompt and not more else None)
        return parts

    def _dispatch(self, holds: str | None = None) -> list[Part]:
        """Give the free slots to the queued requests, each as many as it wants of them (``holds``: the prompt
        one of the free slots holds); with none queued, to the started request with the most choices left."""
        if not self.queue and self.on_spare is not None:
            self.on_spare()
        parts = []
        while self.free > 0:
            if self.queue:
                request = self._next_queued(holds)
                holds = None
            else:
                waiting = [r for r in self.started if r.left > 0]
                if not waiting:
                    break
                request = max(waiting, key=lambda r: r.left)
            slots = min(request.left, self.free)
            self.free -= slots
            self._note()
            parts.append(self._start(request, slots))
        return parts

    def _next_queued(self, holds: str | None) -> Request:
        """The queued request with the prompt ``holds``, else the first whose prompt no busy slot holds,
        else the first."""
        request = next((r for r in self.queue if r.key == holds), None) if holds else None
        request = request or next((r for r in self.queue if not self.held[r.key]), self.queue[0])
        self.queue.remove(request)
        return request

    def _start(self, request: Request, slots: int) -> Part:
        self.started.setdefault(request, None)
        self.held[request.key] += 1
        part = Part(request, request.asked, slots)
        request.left -= slots
        request.asked += slots
        return part

    def _note(self) -> None:
        self.occupancy.append((self.clock(), self.capacity - self.free))
