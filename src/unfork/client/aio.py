"""The asyncio clients over httpx: :class:`OpenAIClient`, :class:`MultiClient`, :class:`SyncClient`."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from unfork.client.base import (
    APIError,
    ChatResult,
    ClientError,
    ClientSettings,
    EndpointUnreachableError,
    Message,
    ModelInfo,
    NotFoundError,
    RequestTimeoutError,
    SSEDecoder,
    Stats,
    StreamInterruptedError,
    Usage,
    _Attempts,
    _choice_text,
    _error_for_status,
    _parse_chunk,
    _parse_models,
    _payload,
    _Retryable,
    _root_url,
    _status_failure,
    log,
    normalize_base_url,
    redact_url,
)


def _import_httpx():  # noqa: ANN202
    """``import httpx`` without its command-line tool.

    httpx's ``__init__`` imports ``httpx._main``, which loads rich and pygments
    when they are installed: start-up time that ``chat -qq`` would pay for
    nothing. A ``None`` entry in ``sys.modules`` makes that import fail,
    which httpx tolerates; the entry is removed afterwards.
    """
    if "httpx" in sys.modules:
        return sys.modules["httpx"]
    blocked = "httpx._main" not in sys.modules
    if blocked:
        sys.modules["httpx._main"] = None  # type: ignore[assignment]
    try:
        import httpx
    finally:
        if blocked and sys.modules.get("httpx._main", 0) is None:
            del sys.modules["httpx._main"]
    return httpx


httpx = _import_httpx()

T = TypeVar("T")


def _transport_error(exc: httpx.TransportError, url: str) -> _Retryable:
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        kind = "connecting" if isinstance(exc, httpx.ConnectTimeout) else "waiting for the answer"
        return _Retryable(RequestTimeoutError(f"{url}: timed out {kind} ({detail})",
                                              hint="the server may be overloaded; raise the timeout"))
    return _Retryable(EndpointUnreachableError(
        f"cannot reach {url}: {detail}",
        hint="is the server running? check --endpoint-url, or leave it out to start a local server"))


# ------------------------------------------------------------------ client


class OpenAIClient:
    """An async client for one OpenAI-compatible endpoint.

    Usable across several ``asyncio.run`` calls: the HTTP pool and the
    concurrency limit are rebuilt when the event loop changes.
    """

    def __init__(self, settings: ClientSettings | str, *, model: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None):
        if isinstance(settings, str):
            settings = ClientSettings(settings)
        self.settings = replace(settings, base_url=normalize_base_url(settings.base_url))
        self.model = model
        self.stats = Stats()
        self._transport = transport
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http: httpx.AsyncClient | None = None
        self._sem: asyncio.Semaphore | None = None
        self._waiting = 0
        self._consecutive_failures = 0
        self._times_down = 0
        self._down_until = 0.0
        self._models_cache: list[ModelInfo] | None = None

    def __repr__(self) -> str:
        return f"OpenAIClient({redact_url(self.base_url)!r})"

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    @property
    def load(self) -> int:
        """Requests waiting for or holding a slot."""
        return self._waiting

    # -- plumbing

    def _ensure(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._http is None:
            s = self.settings
            headers = {"Accept": "application/json"}
            if s.api_key:
                headers["Authorization"] = f"Bearer {s.api_key}"
            self._http = httpx.AsyncClient(
                headers=headers,
                timeout=httpx.Timeout(s.timeout, connect=s.connect_timeout),
                limits=httpx.Limits(max_connections=s.max_concurrency + 4,
                                    max_keepalive_connections=s.max_concurrency),
                # No TLS context for plain http: loading the CA bundle slows start-up.
                verify=s.verify_tls if s.base_url.startswith("https") else False,
                transport=self._transport,
                trust_env=False,
            )
            self._sem = asyncio.Semaphore(max(1, s.max_concurrency))
            self._loop = loop
        return self._http

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[httpx.AsyncClient]:
        http = self._ensure()
        assert self._sem is not None
        self._waiting += 1
        try:
            async with self._sem:
                st = self.stats
                st.in_flight += 1
                st.max_in_flight = max(st.max_in_flight, st.in_flight)
                st.attempts += 1
                try:
                    yield http
                finally:
                    st.in_flight -= 1
        finally:
            self._waiting -= 1

    def _url(self, path: str) -> str:
        if path.startswith("http://") or path.startswith("https://"):
            return path
        return self.base_url + path

    def _check_status(self, resp: httpx.Response, url: str) -> None:
        if resp.status_code < 400:
            return
        raise _status_failure(resp.status_code, resp.text, resp.headers, url)

    async def _attempt_json(self, method: str, path: str, payload: dict[str, Any] | None = None,
                            *, timeout: float | None = None) -> Any:
        """One HTTP request; raises ``_Retryable`` or a final ``ClientError``."""
        url = self._url(path)
        async with self._slot() as http:
            kwargs: dict[str, Any] = {}
            if timeout is not None:
                kwargs["timeout"] = httpx.Timeout(timeout, connect=min(timeout, self.settings.connect_timeout))
            try:
                resp = await http.request(method, url, json=payload, **kwargs)
            except httpx.TransportError as exc:
                raise _transport_error(exc, url) from exc
        self._check_status(resp, url)
        try:
            data = resp.json()
        except ValueError as exc:
            raise _Retryable(APIError(f"{url} answered {resp.status_code} with a body that is not JSON",
                                      status_code=resp.status_code, url=url)) from exc
        if isinstance(data, dict) and data.get("error") and not data.get("choices"):
            raise _error_for_status(resp.status_code if resp.status_code >= 400 else 500, data, resp.text, url)
        return data

    def _note_success(self) -> None:
        self._consecutive_failures = 0
        self._times_down = 0

    def _note_failure(self, threshold: int, cooldown: float) -> None:
        self._consecutive_failures += 1
        if self._consecutive_failures >= threshold:
            self._down_until = time.monotonic() + min(300.0, cooldown * 2 ** self._times_down)
            self._times_down += 1
            self._consecutive_failures = 0
            log.warning("endpoint %s keeps failing; skipping it for a while", redact_url(self.base_url))

    async def _model_for(self, model: str | None) -> str:
        """The model name to send: given, configured, or the server's first model."""
        if model:
            return model
        if self.model:
            return self.model
        try:
            data = await self._attempt_json("GET", "/models", timeout=self.settings.connect_timeout + 5)
        except NotFoundError:
            data = None
        models = _parse_models(data)
        self.model = models[0].id if models else "default"
        return self.model

    # -- public API

    async def chat(self, messages: Sequence[Message], *, model: str | None = None,
                   temperature: float | None = None, max_tokens: int | None = None,
                   seed: int | None = None, stop: str | Sequence[str] | None = None,
                   response_format: dict[str, Any] | None = None, **extra: Any) -> ChatResult:
        """POST /chat/completions; the first choice's text and the whole reply."""
        payload = _payload(messages=list(messages), temperature=temperature, max_tokens=max_tokens, seed=seed,
                           stop=stop, response_format=response_format, **extra)
        return await _call(self._pick_self, self.settings, self.stats,
                           lambda c: c._chat_once("/chat/completions", payload, model))

    async def complete(self, prompt: str, *, model: str | None = None, temperature: float | None = None,
                       max_tokens: int | None = None, seed: int | None = None,
                       stop: str | Sequence[str] | None = None, **extra: Any) -> ChatResult:
        """POST /completions (raw text in, raw text out)."""
        payload = _payload(prompt=prompt, temperature=temperature, max_tokens=max_tokens, seed=seed,
                           stop=stop, **extra)
        return await _call(self._pick_self, self.settings, self.stats,
                           lambda c: c._chat_once("/completions", payload, model))

    def stream_chat(self, messages: Sequence[Message], *, model: str | None = None,
                    temperature: float | None = None, max_tokens: int | None = None,
                    seed: int | None = None, stop: str | Sequence[str] | None = None,
                    **extra: Any) -> ChatStream:
        """Stream an answer: ``async for piece in client.stream_chat(msgs)``.

        The returned :class:`ChatStream` also collects ``text``,
        ``finish_reason`` and ``usage``. Use it with ``async with`` (or call
        ``aclose()``) when you may stop reading early.
        """
        payload = _payload(messages=list(messages), temperature=temperature, max_tokens=max_tokens, seed=seed,
                           stop=stop, stream=True, **extra)
        return ChatStream(self._pick_self, self.settings, self.stats, "/chat/completions", payload, model)

    def stream_complete(self, prompt: str, *, model: str | None = None, temperature: float | None = None,
                        max_tokens: int | None = None, seed: int | None = None,
                        stop: str | Sequence[str] | None = None, **extra: Any) -> ChatStream:
        """Like :meth:`stream_chat` for /completions."""
        payload = _payload(prompt=prompt, temperature=temperature, max_tokens=max_tokens, seed=seed,
                           stop=stop, stream=True, **extra)
        return ChatStream(self._pick_self, self.settings, self.stats, "/completions", payload, model)

    async def request_json(self, method: str, path: str, payload: dict[str, Any] | None = None,
                           *, timeout: float | None = None) -> Any:
        """One HTTP request for a JSON reply, never retried, for a server's own extras (llama.cpp's
        ``/tokenize``) whose absence the caller handles; raises a ``ClientError``."""
        try:
            return await self._attempt_json(method, path, payload, timeout=timeout)
        except _Retryable as r:
            raise r.error from r

    async def model_name(self, model: str | None = None) -> str:
        """The name requests will carry: ``model``, the client's, or the server's first model."""
        return await _call(self._pick_self, self.settings, self.stats, lambda c: c._model_for(model))

    async def list_models(self) -> list[ModelInfo]:
        """GET /models."""
        data = await _call(self._pick_self, self.settings, self.stats,
                           lambda c: c._attempt_json("GET", "/models"))
        self._models_cache = _parse_models(data)
        return self._models_cache

    async def health(self) -> bool:
        """True when the server answers /health (or /v1/models) with 200; never retries or queues."""
        http = self._ensure()
        timeout = httpx.Timeout(self.settings.connect_timeout)
        for url in (_root_url(self.base_url) + "/health", self._url("/models")):
            try:
                resp = await http.get(url, timeout=timeout)
            except httpx.TransportError:
                return False
            if resp.status_code == 404:
                continue
            return resp.status_code == 200
        return False

    async def wait_ready(self, timeout: float = 120.0, interval: float = 0.25) -> bool:
        """Poll :meth:`health` until it passes or ``timeout`` seconds have gone by."""
        deadline = time.monotonic() + timeout
        while True:
            if await self.health():
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(interval)

    async def context_window(self, model: str | None = None) -> int | None:
        """The model's context window in tokens, when the server says (vLLM, llama.cpp...)."""
        with contextlib.suppress(ClientError, _Retryable):
            models = self._models_cache
            if models is None:
                models = _parse_models(await self._attempt_json("GET", "/models",
                                                                timeout=self.settings.connect_timeout + 5))
                self._models_cache = models
            want = model or self.model
            for m in models:
                if m.context_length and (want is None or m.id == want or len(models) == 1):
                    return m.context_length
        with contextlib.suppress(ClientError, _Retryable):
            props = await self._attempt_json("GET", _root_url(self.base_url) + "/props",
                                             timeout=self.settings.connect_timeout + 5)
            if isinstance(props, dict):
                gen = props.get("default_generation_settings")
                for src in (gen, props):
                    if isinstance(src, dict) and isinstance(src.get("n_ctx"), int):
                        return src["n_ctx"]
        return None

    async def aclose(self) -> None:
        if self._http is not None:
            http, self._http, self._loop = self._http, None, None
            with contextlib.suppress(RuntimeError):
                await http.aclose()

    async def __aenter__(self) -> OpenAIClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- internals shared with MultiClient

    def _pick_self(self) -> OpenAIClient:
        return self

    async def _chat_once(self, path: str, payload: dict[str, Any], model: str | None) -> ChatResult:
        body = {**payload, "model": await self._model_for(model)}
        data = await self._attempt_json("POST", path, body)
        choices = data.get("choices") if isinstance(data, dict) else None
        if not choices:
            raise _Retryable(APIError(f"{self._url(path)} answered without choices",
                                      status_code=200, url=self._url(path), body=data))
        usage = Usage.from_json(data.get("usage"))
        self.stats.prompt_tokens += usage.prompt_tokens
        self.stats.completion_tokens += usage.completion_tokens
        first = choices[0]
        return ChatResult(_choice_text(first), first.get("finish_reason"), usage, data.get("model"), data)

    @contextlib.asynccontextmanager
    async def _open_stream(self, path: str, payload: dict[str, Any]) -> AsyncIterator[AsyncIterator[str]]:
        url = self._url(path)
        async with self._slot() as http:
            try:
                req = http.build_request("POST", url, json=payload, headers={"Accept": "text/event-stream"})
                resp = await http.send(req, stream=True)
            except httpx.TransportError as exc:
                raise _transport_error(exc, url) from exc
            try:
                if resp.status_code >= 400:
                    await resp.aread()
                    self._check_status(resp, url)
                yield _lines(resp, url)
            finally:
                await resp.aclose()


async def _call(pick: Callable[[], OpenAIClient], settings: ClientSettings, stats: Stats,
                do: Callable[[OpenAIClient], Awaitable[T]],
                on_failure: Callable[[OpenAIClient], None] | None = None) -> T:
    attempts = _Attempts(settings, stats)
    while True:
        client = pick()
        try:
            result = await do(client)
        except _Retryable as r:
            if on_failure:
                on_failure(client)
            await asyncio.sleep(attempts.next_delay(r))
            continue
        except ClientError:
            attempts.gave_up()
            raise
        client._note_success()
        return result


async def _lines(resp: httpx.Response, url: str) -> AsyncIterator[str]:
    try:
        async for line in resp.aiter_lines():
            yield line
    except httpx.TransportError as exc:
        raise _transport_error(exc, url) from exc


# --------------------------------------------------------------- streaming


class ChatStream:
    """An answer arriving piece by piece (an ``AsyncIterator[str]``).

    After (or during) iteration: ``text`` so far, ``finish_reason``, ``usage``
    and ``model`` when the server sent them.
    """

    def __init__(self, pick: Callable[[], OpenAIClient], settings: ClientSettings, stats: Stats,
                 path: str, payload: dict[str, Any], model: str | None,
                 on_failure: Callable[[OpenAIClient], None] | None = None):
        self.text = ""
        self.finish_reason: str | None = None
        self.usage = Usage()
        self.model: str | None = None
        self._gen = self._run(pick, settings, stats, path, payload, model, on_failure)

    def __aiter__(self) -> ChatStream:
        return self

    async def __anext__(self) -> str:
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        await self._gen.aclose()

    async def __aenter__(self) -> ChatStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def collect(self) -> ChatResult:
        """Read the whole stream; the same result ``chat()`` would give."""
        async for _ in self:
            pass
        return ChatResult(self.text, self.finish_reason, self.usage, self.model, {})

    def _event(self, data: str, url: str) -> str:
        piece, finish, usage, model = _parse_chunk(data, url)
        self.finish_reason = finish or self.finish_reason
        self.usage = usage or self.usage
        self.model = model or self.model
        return piece

    async def _run(self, pick: Callable[[], OpenAIClient], settings: ClientSettings, stats: Stats,
                   path: str, payload: dict[str, Any], model: str | None,
                   on_failure: Callable[[OpenAIClient], None] | None) -> AsyncIterator[str]:
        attempts = _Attempts(settings, stats)
        while True:
            client = pick()
            url = client._url(path)
            try:
                body = {**payload, "model": await client._model_for(model)}
                async with client._open_stream(path, body) as lines:
                    decoder = SSEDecoder()
                    done = False
                    async for line in lines:
                        data = decoder.feed(line)
                        if data is None:
                            continue
                        if data.strip() == "[DONE]":
                            done = True
                            break
                        piece = self._event(data, url)
                        if piece:
                            self.text += piece
                            yield piece
                    if not done:
                        data = decoder.flush()
                        if data and data.strip() != "[DONE]":
                            piece = self._event(data, url)
                            if piece:
                                self.text += piece
                                yield piece
                        if self.finish_reason is None:  # closed before the end: cut off
                            raise _Retryable(EndpointUnreachableError(
                                f"{url} closed the stream before the answer was complete"))
            except _Retryable as r:
                if on_failure:
                    on_failure(client)
                if self.text:  # part of the answer is out: a retry would repeat it
                    attempts.gave_up()
                    raise StreamInterruptedError(
                        f"the answer from {url} broke off after {len(self.text)} characters: {r.error.message}"
                    ) from r.__cause__
                await asyncio.sleep(attempts.next_delay(r))
                continue
            except ClientError:
                attempts.gave_up()
                raise
            client._note_success()
            client.stats.prompt_tokens += self.usage.prompt_tokens
            client.stats.completion_tokens += self.usage.completion_tokens
            return


# ------------------------------------------------------------ multi client


class MultiClient:
    """Spreads requests over several endpoints serving the same model.

    ``strategy``: ``"least-in-flight"`` (default; ties go round-robin) or
    ``"round-robin"``. An endpoint that fails ``fail_threshold`` attempts in a
    row is skipped for ``cooldown`` seconds (doubling each time, up to 5
    minutes); a retry goes to another endpoint when one is up.
    """

    def __init__(self, endpoints: Sequence[OpenAIClient | ClientSettings | str], *,
                 strategy: str = "least-in-flight", model: str | None = None,
                 fail_threshold: int = 3, cooldown: float = 30.0, retry: ClientSettings | None = None):
        if not endpoints:
            raise ValueError("MultiClient needs at least one endpoint")
        if strategy not in ("least-in-flight", "round-robin"):
            raise ValueError(f"unknown strategy {strategy!r}")
        self.clients = [e if isinstance(e, OpenAIClient) else OpenAIClient(e, model=model) for e in endpoints]
        self.strategy = strategy
        self.fail_threshold = fail_threshold
        self.cooldown = cooldown
        first = self.clients[0].settings
        # Retry budget: enough for every endpoint to get a few tries.
        self.settings = retry or replace(first, max_retries=max(first.max_retries, 2 * len(self.clients)))
        self._own = Stats()
        self._next = 0

    def __repr__(self) -> str:
        return f"MultiClient({[redact_url(c.base_url) for c in self.clients]!r})"

    @property
    def stats(self) -> Stats:
        """Calls, retries and failures of this client; attempts and tokens summed over endpoints."""
        s = replace(self._own)
        for c in self.clients:
            s.attempts += c.stats.attempts
            s.prompt_tokens += c.stats.prompt_tokens
            s.completion_tokens += c.stats.completion_tokens
            s.in_flight += c.stats.in_flight
            s.max_in_flight += c.stats.max_in_flight
        return s

    def endpoint_stats(self) -> dict[str, dict[str, int]]:
        return {redact_url(c.base_url): c.stats.as_dict() for c in self.clients}

    def _pick(self) -> OpenAIClient:
        now = time.monotonic()
        n = len(self.clients)
        order = [self.clients[(self._next + i) % n] for i in range(n)]
        self._next = (self._next + 1) % n
        up = [c for c in order if c._down_until <= now]
        if not up:
            return min(order, key=lambda c: c._down_until)
        if self.strategy == "round-robin":
            return up[0]
        return min(up, key=lambda c: c.load)  # min keeps the first of equals: round-robin among ties

    def _failed(self, client: OpenAIClient) -> None:
        client._note_failure(self.fail_threshold, self.cooldown)

    async def chat(self, messages: Sequence[Message], *, model: str | None = None,
                   temperature: float | None = None, max_tokens: int | None = None,
                   seed: int | None = None, stop: str | Sequence[str] | None = None,
                   response_format: dict[str, Any] | None = None, **extra: Any) -> ChatResult:
        payload = _payload(messages=list(messages), temperature=temperature, max_tokens=max_tokens, seed=seed,
                           stop=stop, response_format=response_format, **extra)
        return await _call(self._pick, self.settings, self._own,
                           lambda c: c._chat_once("/chat/completions", payload, model), self._failed)

    async def complete(self, prompt: str, *, model: str | None = None, temperature: float | None = None,
                       max_tokens: int | None = None, seed: int | None = None,
                       stop: str | Sequence[str] | None = None, **extra: Any) -> ChatResult:
        payload = _payload(prompt=prompt, temperature=temperature, max_tokens=max_tokens, seed=seed,
                           stop=stop, **extra)
        return await _call(self._pick, self.settings, self._own,
                           lambda c: c._chat_once("/completions", payload, model), self._failed)

    def stream_chat(self, messages: Sequence[Message], *, model: str | None = None,
                    temperature: float | None = None, max_tokens: int | None = None,
                    seed: int | None = None, stop: str | Sequence[str] | None = None,
                    **extra: Any) -> ChatStream:
        payload = _payload(messages=list(messages), temperature=temperature, max_tokens=max_tokens, seed=seed,
                           stop=stop, stream=True, **extra)
        return ChatStream(self._pick, self.settings, self._own, "/chat/completions", payload, model,
                          self._failed)

    async def list_models(self) -> list[ModelInfo]:
        """The first reachable endpoint's models."""
        data = await _call(self._pick, self.settings, self._own,
                           lambda c: c._attempt_json("GET", "/models"), self._failed)
        return _parse_models(data)

    async def health(self) -> bool:
        """True when at least one endpoint is healthy."""
        results = await asyncio.gather(*(c.health() for c in self.clients))
        return any(results)

    async def context_window(self, model: str | None = None) -> int | None:
        """The smallest window any endpoint reports."""
        found = [w for w in await asyncio.gather(*(c.context_window(model) for c in self.clients)) if w]
        return min(found) if found else None

    async def aclose(self) -> None:
        for c in self.clients:
            await c.aclose()

    async def __aenter__(self) -> MultiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def make_client(endpoint_urls: str | Sequence[str], *, api_key: str | None = None, model: str | None = None,
                **settings: Any) -> OpenAIClient | MultiClient:
    """One URL: an :class:`OpenAIClient`; several: a :class:`MultiClient` over them."""
    urls = [endpoint_urls] if isinstance(endpoint_urls, str) else list(endpoint_urls)
    if not urls:
        raise ValueError("no endpoint URL given")
    clients = [OpenAIClient(ClientSettings(u, api_key=api_key, **settings), model=model) for u in urls]
    return clients[0] if len(clients) == 1 else MultiClient(clients, model=model)


# ------------------------------------------------------------- sync facade


class SyncClient:
    """Blocking calls over an async client, on a private event loop.

    Not for use inside a running event loop (``await`` the async client there).
    """

    def __init__(self, client: OpenAIClient | MultiClient | ClientSettings | str):
        self.client = client if isinstance(client, (OpenAIClient, MultiClient)) else OpenAIClient(client)
        self._loop: asyncio.AbstractEventLoop | None = None

    def _run(self, coro: Awaitable[T]) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            if hasattr(coro, "close"):
                coro.close()  # type: ignore[union-attr]
            raise RuntimeError("SyncClient called inside a running event loop; await the async client instead")
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coro)  # type: ignore[arg-type]

    @property
    def stats(self) -> Stats:
        return self.client.stats

    def chat(self, messages: Sequence[Message], **kwargs: Any) -> ChatResult:
        return self._run(self.client.chat(messages, **kwargs))

    def complete(self, prompt: str, **kwargs: Any) -> ChatResult:
        return self._run(self.client.complete(prompt, **kwargs))

    def stream_chat(self, messages: Sequence[Message], **kwargs: Any) -> Iterator[str]:
        stream = self.client.stream_chat(messages, **kwargs)
        try:
            while True:
                try:
                    yield self._run(stream.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self._run(stream.aclose())

    def list_models(self) -> list[ModelInfo]:
        return self._run(self.client.list_models())

    def health(self) -> bool:
        return self._run(self.client.health())

    def context_window(self, model: str | None = None) -> int | None:
        return self._run(self.client.context_window(model))

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.run_until_complete(self.client.aclose())
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
