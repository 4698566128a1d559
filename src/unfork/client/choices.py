"""A reply of several choices (the API's ``n``), streamed so that each choice is known to be over when it ends.

A server decodes each choice in a slot of its own and frees that slot as soon
as the choice ends, while a whole (not streamed) reply arrives only once the
longest choice is over. Data generation wants to know the moment a slot is
free, to give it new work: :func:`chat_choices` streams the reply, calls
``on_finish(index)`` as each choice ends, and returns the same
:class:`ChatResult` a whole reply would give (``raw`` in the shape of a whole
reply, with ``usage`` and, from llama.cpp, ``timings``).

Unlike a streamed answer shown to a user, nothing here is out until the end,
so a stream that breaks off is retried like any failed request. A server that
answers with a whole reply instead of a stream is read as one.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from unfork.client.base import (
    APIError,
    ChatResult,
    EndpointUnreachableError,
    Message,
    SSEDecoder,
    Usage,
    _choice_text,
    _chunk_piece,
    _load_chunk,
    _payload,
    _Retryable,
)

OnFinish = Callable[[int], Awaitable[None] | None]


class StreamedChoices:
    """The events of one streamed reply, put back together choice by choice."""

    def __init__(self, url: str):
        self.url = url
        self.texts: dict[int, str] = {}
        self.finish: dict[int, str] = {}
        self.extra: dict[str, Any] = {}  # usage, timings, model: whichever events carried them
        self.done = False  # [DONE] seen
        self._decoder = SSEDecoder()
        self._events = 0
        self._other: list[str] = []  # lines that are not server-sent events (a whole reply)

    def feed(self, line: str) -> list[int]:
        """One line of the stream; returns the indexes of the choices that ended with it."""
        if not self._events and line.strip() and not line.startswith(("data", ":", "event", "id", "retry")):
            self._other.append(line)
            return []
        data = self._decoder.feed(line)
        return self._event(data) if data is not None else []

    def close(self) -> list[int]:
        """The end of the stream: the last event or a whole reply; raises (retryable) when it was cut off."""
        if self._other and not self._events:
            return self._whole("\n".join(self._other))
        data = self._decoder.flush()
        ended = self._event(data) if data is not None else []
        if not self.texts or any(i not in self.finish for i in self.texts):
            raise _Retryable(EndpointUnreachableError(f"{self.url} closed the stream before the answer was complete"))
        return ended

    def _event(self, data: str) -> list[int]:
        if data.strip() == "[DONE]":
            self.done = True
            return []
        self._events += 1
        chunk = _load_chunk(data, self.url)
        if chunk is None:
            return []
        self._keep(chunk)
        ended = []
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            i = choice.get("index") if isinstance(choice.get("index"), int) else 0
            self.texts[i] = self.texts.get(i, "") + _chunk_piece(choice)
            if choice.get("finish_reason") and i not in self.finish:
                self.finish[i] = choice["finish_reason"]
                ended.append(i)
        return ended

    def _whole(self, text: str) -> list[int]:
        try:
            data = json.loads(text)
        except ValueError:
            raise _Retryable(APIError(f"{self.url} answered a stream with something that is not JSON: "
                                      f"{text[:200]!r}", status_code=200, url=self.url)) from None
        if not isinstance(data, dict) or not data.get("choices"):
            raise _Retryable(APIError(f"{self.url} answered without choices", status_code=200, url=self.url,
                                      body=data))
        self._keep(data)
        for j, choice in enumerate(c for c in data["choices"] if isinstance(c, dict)):
            i = choice.get("index") if isinstance(choice.get("index"), int) else j
            self.texts[i] = _choice_text(choice)
            self.finish[i] = choice.get("finish_reason") or "stop"
        return sorted(self.finish)

    def _keep(self, data: dict[str, Any]) -> None:
        for key in ("usage", "timings", "model"):
            if data.get(key):
                self.extra[key] = data[key]

    def result(self) -> ChatResult:
        """The reply as a whole (not streamed) one would be."""
        choices = [{"index": i, "message": {"role": "assistant", "content": self.texts[i]},
                    "finish_reason": self.finish.get(i)} for i in sorted(self.texts)]
        raw = {"choices": choices, **self.extra}
        first = choices[0]
        model = self.extra.get("model") if isinstance(self.extra.get("model"), str) else None
        return ChatResult(first["message"]["content"], first["finish_reason"], Usage.from_json(raw.get("usage")),
                          model, raw)


async def chat_choices(client: Any, messages: Sequence[Message], *, model: str | None = None,
                       on_finish: OnFinish | None = None, **params: Any) -> ChatResult:
    """POST /chat/completions streamed; ``on_finish(index)`` (a function or a coroutine function) is called
    once per choice, as it ends, even when a broken stream is retried. ``client``: an OpenAIClient or a
    MultiClient."""
    from unfork.client.aio import MultiClient, _call

    if isinstance(client, MultiClient):
        pick, settings, stats, failed = client._pick, client.settings, client._own, client._failed
    else:
        pick, settings, stats, failed = client._pick_self, client.settings, client.stats, None
    payload = _payload(messages=list(messages), stream=True, stream_options={"include_usage": True}, **params)
    reported: set[int] = set()

    async def report(ended: list[int]) -> None:
        for i in ended:
            if i in reported or on_finish is None:
                continue
            reported.add(i)
            done = on_finish(i)
            if inspect.isawaitable(done):
                await done

    async def attempt(c: Any) -> ChatResult:
        reply = StreamedChoices(c._url("/chat/completions"))
        body = {**payload, "model": await c._model_for(model)}
        async with c._open_stream("/chat/completions", body) as lines:
            async for line in lines:
                await report(reply.feed(line))
                if reply.done:
                    break
        await report(reply.close())
        result = reply.result()
        c.stats.prompt_tokens += result.usage.prompt_tokens
        c.stats.completion_tokens += result.usage.completion_tokens
        return result

    return await _call(pick, settings, stats, attempt, failed)
