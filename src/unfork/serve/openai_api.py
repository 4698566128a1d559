"""The OpenAI-compatible HTTP layer of unfork's own server (the transformers backend).

It knows nothing about torch: it talks to an *engine* (see :class:`Engine`)
that turns messages into token ids and token ids into text pieces. Stop
strings, the streaming format (server-sent events), usage counts and API-key
checks live here, so they are tested with a scripted engine in milliseconds.
"""

from __future__ import annotations

import contextlib
import json
import math
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

PUBLIC_PATHS = frozenset({"/health", "/v1/health"})  # as llama-server: health needs no key
# Far more than a whole context window of text takes, and small enough that a flood of bodies cannot
# exhaust memory.
MAX_BODY_BYTES = 8 * 1024 * 1024
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.manual_seed accepts


class RequestError(Exception):
    def __init__(self, message: str, status: int = 400, param: str | None = None):
        super().__init__(message)
        self.message, self.status, self.param = message, status, param


@dataclass
class SamplingParams:
    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)


@dataclass
class Generation:
    """Filled in by the engine while it generates."""

    finish_reason: str = "stop"
    completion_tokens: int = 0


class Engine(Protocol):
    context_length: int

    def encode_chat(self, messages: list[dict[str, Any]], tools: list | None = None) -> list[int]: ...

    def encode(self, text: str) -> list[int]: ...

    def generate(self, ids: list[int], params: SamplingParams, cancel: threading.Event,
                 result: Generation) -> Iterator[str]:
        """Yield text pieces; stop early once ``cancel`` is set; fill ``result``."""
        ...


class StopScanner:
    """Cut generated text where the whole text's first stop string begins, holding back only what could
    start one: a stop found in the text is final only once no stop that would begin earlier can still
    complete ("<b<" with stops "b" and "<b<" is cut at 0, even when "<b" came first)."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.buf = ""

    def feed(self, piece: str) -> tuple[str, bool]:
        self.buf += piece
        hit = self._first_hit()
        end = len(self.buf) if hit is None else hit
        # the earliest place before ``end`` where a stop may begin that the text so far has not completed
        start = next((q for q in range(end) if self._may_begin(q)), None)
        if start is None and hit is not None:
            out, self.buf = self.buf[:hit], ""
            return out, True
        cut = end if start is None else start
        out, self.buf = self.buf[:cut], self.buf[cut:]
        return out, False

    def flush(self) -> tuple[str, bool]:
        """The end of the text: what was held back, cut at a stop it holds; and whether it held one."""
        hit = self._first_hit()
        out, self.buf = self.buf[:hit] if hit is not None else self.buf, ""
        return out, hit is not None

    def _first_hit(self) -> int | None:
        hits = [i for i in (self.buf.find(s) for s in self.stops) if i >= 0]
        return min(hits) if hits else None

    def _may_begin(self, q: int) -> bool:
        rest = self.buf[q:]
        return any(len(s) > len(rest) and s.startswith(rest) for s in self.stops)


# -- request parsing --------------------------------------------------------------------------

def _number(body: dict, name: str, typ: type, lo: float | None = None, hi: float | None = None):
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or (typ is int and value != int(value)):
        raise RequestError(f"'{name}' must be {'an integer' if typ is int else 'a number'}", param=name)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise RequestError(f"'{name}' must be between {lo} and {hi}", param=name)
    return typ(value)


def sampling_params(body: dict, prompt_tokens: int, context_length: int) -> SamplingParams:
    room = context_length - prompt_tokens
    if room <= 0:
        raise RequestError(f"the prompt has {prompt_tokens} tokens, which fills the context window "
                           f"of {context_length} tokens", param="messages")
    n = _number(body, "n", int, 1, 1)
    del n  # only one choice per request
    max_tokens = _number(body, "max_completion_tokens", int, 1) or _number(body, "max_tokens", int, 1)
    stop = body.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise RequestError("'stop' must be a string or a list of strings", param="stop")
    return SamplingParams(
        max_tokens=min(max_tokens or room, room),
        temperature=_number(body, "temperature", float, 0, 2),
        top_p=_number(body, "top_p", float, 0, 1),
        top_k=_number(body, "top_k", int, 0),
        seed=_number(body, "seed", int, *SEED_RANGE),
        stop=stop,
    )


def chat_messages(body: dict) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list", param="messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise RequestError(f"messages[{i}] must be an object with a 'role'", param="messages")
        content = m.get("content")
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            parts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            if len(parts) != len(content):
                raise RequestError(f"messages[{i}]: only text content is supported", param="messages")
            content = "".join(parts)
        elif content is None:
            content = ""
        elif not isinstance(content, str):
            raise RequestError(f"messages[{i}].content must be text", param="messages")
        out.append({**m, "content": content})
    return out


def completion_prompt(body: dict) -> str | list[int]:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return prompt
    raise RequestError("'prompt' must be a string, a list with one string, or a list of token ids",
                       param="prompt")


# -- responses -------------------------------------------------------------------------------

def error_body(message: str, status: int, param: str | None = None) -> dict:
    kind = {401: "authentication_error", 404: "not_found_error"}.get(status, "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def usage(prompt_tokens: int, result: Generation) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": prompt_tokens + result.completion_tokens}


def sse(obj: Any) -> bytes:
    """One server-sent event carrying ``obj`` as JSON."""
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


def models_body(model_id: str, created: int, context_length: int) -> dict:
    return {"object": "list", "data": [
        {"id": model_id, "object": "model", "created": created, "owned_by": "unfork",
         "meta": {"n_ctx": context_length}}]}


def response_base(model_id: str, chat: bool) -> dict:
    """The id, object, created and model fields every chunk of one response shares."""
    rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
    return {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()), "model": model_id}


def stream_chunk(base: dict, chat: bool, text: str | None, finish: str | None, first: bool = False) -> dict:
    if chat:
        delta: dict[str, Any] = {}
        if first:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    else:
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
    return {**base, "choices": [choice]}


def completion_body(base: dict, chat: bool, text: str, prompt_tokens: int, result: Generation) -> dict:
    """The whole (non-streamed) answer."""
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": text},
                  "logprobs": None, "finish_reason": result.finish_reason}
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": result.finish_reason}
    return {"id": base["id"], "object": "chat.completion" if chat else "text_completion",
            "created": base["created"], "model": base["model"], "choices": [choice],
            "usage": usage(prompt_tokens, result)}


def include_usage(body: dict) -> bool:
    opts = body.get("stream_options") or {}
    return isinstance(opts, dict) and bool(opts.get("include_usage"))


def api_key_ok(headers: dict[bytes, bytes], key: bytes) -> bool:
    """Whether ``Authorization: Bearer <key>`` or ``X-Api-Key: <key>`` carries the key."""
    auth = headers.get(b"authorization", b"")
    token = auth[7:].strip() if auth[:7].lower() == b"bearer " else headers.get(b"x-api-key", b"")
    return secrets.compare_digest(token, key)


class APIKeyMiddleware:
    """Reject requests without ``Authorization: Bearer <key>`` (or ``X-Api-Key``) with 401."""

    def __init__(self, app, api_key: str):
        self.app = app
        self.key = api_key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] not in PUBLIC_PATHS:
            if not api_key_ok(dict(scope["headers"]), self.key):
                from starlette.responses import JSONResponse

                response = JSONResponse(error_body("Invalid API Key", 401), status_code=401,
                                        headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


# -- generating -------------------------------------------------------------------------------

_END = object()


def _next(it: Iterator[str]):
    return next(it, _END)


async def pieces(engine: Engine, ids: list[int], params: SamplingParams, result: Generation) -> AsyncIterator[str]:
    """The engine's text pieces with stop strings cut out; the engine is cancelled when this ends early."""
    import anyio

    # A thread of this request's own: an engine may hold a lock between pieces, and requests queued on
    # that lock must not take every thread of the shared pool from the one holding it (a deadlock).
    own = anyio.CapacityLimiter(1)
    cancel = threading.Event()
    it = engine.generate(ids, params, cancel, result)
    scanner = StopScanner(params.stop)
    try:
        while True:
            piece = await anyio.to_thread.run_sync(_next, it, limiter=own)
            if piece is _END:
                tail, hit = scanner.flush()
                if tail:
                    yield tail
                if hit:
                    result.finish_reason = "stop"
                return
            text, hit = scanner.feed(piece)
            if text:
                yield text
            if hit:
                result.finish_reason = "stop"
                return
    finally:
        cancel.set()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(it.close, limiter=own)


async def stream_events(engine: Engine, ids: list[int], params: SamplingParams, base: dict, chat: bool,
                        with_usage: bool) -> AsyncIterator[bytes]:
    """The server-sent events of a streamed answer, ending with ``[DONE]``."""
    result = Generation()
    if chat:
        yield sse(stream_chunk(base, chat, "", None, first=True))
    try:
        async for text in pieces(engine, ids, params, result):
            yield sse(stream_chunk(base, chat, text, None))
    except Exception as exc:  # the status line is sent already: report in the stream
        yield sse(error_body(f"generation failed: {exc}", 500))
        return
    yield sse(stream_chunk(base, chat, None if chat else "", result.finish_reason))
    if with_usage:
        yield sse({**base, "choices": [], "usage": usage(len(ids), result)})
    yield b"data: [DONE]\n\n"


async def whole_text(request, chunks: AsyncIterator[str]) -> str:
    """All of a non-streamed answer; generation stops once the client has gone, as nobody would read it."""
    out = []
    async with contextlib.aclosing(chunks):
        async for text in chunks:
            out.append(text)
            if request is not None and await request.is_disconnected():
                break
    return "".join(out)


async def generate_response(engine: Engine, model_id: str, body: dict, ids: list[int], chat: bool,
                            request=None):
    """A JSON answer, or a streaming one when the request asks for ``stream``."""
    from starlette.responses import JSONResponse, StreamingResponse

    params = sampling_params(body, len(ids), engine.context_length)
    base = response_base(model_id, chat)
    if body.get("stream"):
        events = stream_events(engine, ids, params, base, chat, include_usage(body))
        return StreamingResponse(events, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    result = Generation()
    text = await whole_text(request, pieces(engine, ids, params, result))
    return JSONResponse(completion_body(base, chat, text, len(ids), result))


# -- endpoints --------------------------------------------------------------------------------

async def read_body(request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, refused with 413 as soon as it is known to pass ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    too_big = RequestError(f"the request body is larger than {limit // (1024 * 1024)} MiB", status=413)
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


async def read_json(request) -> dict:
    raw = await read_body(request)
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # bad JSON or text, NaN/Infinity, nesting deeper than Python's stack
        raise RequestError("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    return body


def chat_tools(body: dict) -> list | None:
    return body.get("tools") if isinstance(body.get("tools"), list) else None


async def chat_completions(request, engine: Engine, model_id: str):
    from starlette.concurrency import run_in_threadpool

    body = await read_json(request)
    messages = chat_messages(body)
    ids = await run_in_threadpool(engine.encode_chat, messages, chat_tools(body))
    return await generate_response(engine, model_id, body, ids, chat=True, request=request)


async def completions(request, engine: Engine, model_id: str):
    from starlette.concurrency import run_in_threadpool

    body = await read_json(request)
    prompt = completion_prompt(body)
    ids = prompt if isinstance(prompt, list) else await run_in_threadpool(engine.encode, prompt)
    return await generate_response(engine, model_id, body, ids, chat=False, request=request)


def request_error_response(exc: RequestError):
    from starlette.responses import JSONResponse

    return JSONResponse(error_body(exc.message, exc.status, exc.param), status_code=exc.status)


async def not_found(request, exc):
    from starlette.responses import JSONResponse

    return JSONResponse(error_body(f"no route {request.url.path}", 404), status_code=404)


async def health(request):
    from starlette.responses import JSONResponse

    return JSONResponse({"status": "ok"})


# -- the app ----------------------------------------------------------------------------------

def create_app(engine: Engine, model_id: str, api_key: str | None = None):
    """The Starlette app: /health, /v1/models, /v1/chat/completions, /v1/completions."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    created = int(time.time())

    async def chat_route(request):
        try:
            return await chat_completions(request, engine, model_id)
        except RequestError as exc:
            return request_error_response(exc)

    async def completions_route(request):
        try:
            return await completions(request, engine, model_id)
        except RequestError as exc:
            return request_error_response(exc)

    async def models_route(request):
        return JSONResponse(models_body(model_id, created, engine.context_length))

    middleware = [Middleware(APIKeyMiddleware, api_key=api_key)] if api_key else []
    return Starlette(routes=[
        Route("/health", health), Route("/v1/health", health),
        Route("/v1/models", models_route), Route("/models", models_route),
        Route("/v1/chat/completions", chat_route, methods=["POST"]),
        Route("/chat/completions", chat_route, methods=["POST"]),
        Route("/v1/completions", completions_route, methods=["POST"]),
        Route("/completions", completions_route, methods=["POST"]),
    ], middleware=middleware, exception_handlers={404: not_found})
