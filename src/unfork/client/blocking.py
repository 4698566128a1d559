"""One streamed answer over the standard library's ``http.client``: the start-up-light path.

``unfork model chat -qq`` asks one question and exits, so what it costs is
mostly Python start-up. httpx, anyio and asyncio are slow to import next to
this module, which shares with the async client everything that is not
transport: settings, errors, the retry policy and the SSE parser.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

from unfork.client.base import (
    APIError,
    ClientError,
    ClientSettings,
    EndpointUnreachableError,
    Message,
    NotFoundError,
    RequestTimeoutError,
    SSEDecoder,
    Stats,
    StreamInterruptedError,
    Usage,
    _Attempts,
    _parse_chunk,
    _parse_models,
    _payload,
    _Retryable,
    _status_failure,
    normalize_base_url,
)


class BlockingStream:
    """An answer arriving piece by piece (an ``Iterator[str]``); then ``text``,
    ``finish_reason``, ``usage`` and ``model``."""

    def __init__(self, settings: ClientSettings, path: str, payload: dict[str, Any], model: str | None,
                 stats: Stats | None = None):
        self.settings = settings
        self.base_url = normalize_base_url(settings.base_url)
        self.text = ""
        self.finish_reason: str | None = None
        self.usage = Usage()
        self.model = model
        self.stats = stats or Stats()
        self._gen = self._run(path, payload)

    def __iter__(self) -> Iterator[str]:
        return self._gen

    def close(self) -> None:
        self._gen.close()

    # -- one attempt

    def _connect(self, url: str) -> http.client.HTTPConnection:
        parts = urlsplit(url)
        s = self.settings
        try:
            if parts.scheme == "https":
                import ssl

                ctx = ssl.create_default_context() if s.verify_tls else ssl._create_unverified_context()
                conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                    parts.hostname or "", parts.port, timeout=s.connect_timeout, context=ctx)
            else:
                conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=s.connect_timeout)
            conn.connect()
        except TimeoutError as exc:
            raise _Retryable(RequestTimeoutError(f"{url}: timed out connecting ({exc})")) from exc
        except OSError as exc:
            raise _unreachable(url, exc) from exc
        assert conn.sock is not None
        conn.sock.settimeout(s.timeout)
        return conn

    def _request(self, method: str, path: str, body: dict[str, Any] | None,
                 accept: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        url = self.base_url + path
        conn = self._connect(url)
        headers = {"Accept": accept, "Connection": "close"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.settings.api_key:
            headers["Authorization"] = f"Bearer {self.settings.api_key}"
        self.stats.attempts += 1
        try:
            conn.request(method, urlsplit(url).path, body=data, headers=headers)
            resp = conn.getresponse()
        except TimeoutError as exc:
            conn.close()
            raise _Retryable(RequestTimeoutError(f"{url}: timed out waiting for the answer ({exc})")) from exc
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise _unreachable(url, exc) from exc
        if resp.status >= 400:
            try:
                text = resp.read().decode("utf-8", "replace")
            except (OSError, http.client.HTTPException):
                text = ""
            conn.close()
            raise _status_failure(resp.status, text, resp.headers, url)
        return conn, resp

    def _model_name(self) -> str:
        if self.model:
            return self.model
        try:
            conn, resp = self._request("GET", "/models", None, "application/json")
            try:
                models = _parse_models(json.loads(resp.read() or b"null"))
            finally:
                conn.close()
        except NotFoundError:
            models = []
        except ValueError as exc:
            raise _Retryable(APIError(f"{self.base_url}/models answered with a body that is not JSON",
                                      status_code=200, url=self.base_url + "/models")) from exc
        self.model = models[0].id if models else "default"
        return self.model

    def _run(self, path: str, payload: dict[str, Any]) -> Iterator[str]:
        attempts = _Attempts(self.settings, self.stats)
        url = self.base_url + path
        while True:
            try:
                conn, resp = self._request("POST", path, {**payload, "model": self._model_name()},
                                           "text/event-stream")
                try:
                    decoder = SSEDecoder()
                    while True:
                        try:
                            raw = resp.readline()
                        except TimeoutError as exc:
                            raise _Retryable(RequestTimeoutError(f"{url}: timed out waiting for the answer")) \
                                from exc
                        except (OSError, http.client.HTTPException) as exc:
                            raise _unreachable(url, exc) from exc
                        data = decoder.feed(raw.decode("utf-8", "replace")) if raw else decoder.flush()
                        if data is not None:
                            if data.strip() == "[DONE]":
                                break
                            piece, finish, usage, model = _parse_chunk(data, url)
                            self.finish_reason = finish or self.finish_reason
                            self.usage = usage or self.usage
                            self.model = model or self.model
                            if piece:
                                self.text += piece
                                yield piece
                        if not raw:
                            if self.finish_reason is None:
                                raise _Retryable(EndpointUnreachableError(
                                    f"{url} closed the stream before the answer was complete"))
                            break
                finally:
                    conn.close()
            except _Retryable as r:
                if self.text:
                    attempts.gave_up()
                    raise StreamInterruptedError(
                        f"the answer from {url} broke off after {len(self.text)} characters: {r.error.message}"
                    ) from r.__cause__
                time.sleep(attempts.next_delay(r))
                continue
            except ClientError:
                attempts.gave_up()
                raise
            self.stats.prompt_tokens += self.usage.prompt_tokens
            self.stats.completion_tokens += self.usage.completion_tokens
            return


def _unreachable(url: str, exc: BaseException) -> _Retryable:
    detail = str(exc) or type(exc).__name__
    return _Retryable(EndpointUnreachableError(
        f"cannot reach {url}: {detail}",
        hint="is the server running? check --endpoint-url, or leave it out to start a local server"))


def stream_chat_blocking(settings: ClientSettings | str, messages: Sequence[Message], *, model: str | None = None,
                         temperature: float | None = None, max_tokens: int | None = None, seed: int | None = None,
                         stop: str | Sequence[str] | None = None, stats: Stats | None = None,
                         **extra: Any) -> BlockingStream:
    """Stream one chat answer without asyncio or httpx: ``for piece in stream_chat_blocking(...)``.

    Same retries, errors and SSE handling as :meth:`OpenAIClient.stream_chat`;
    no concurrency limit (one request at a time by construction).
    """
    if isinstance(settings, str):
        settings = ClientSettings(settings)
    payload = _payload(messages=list(messages), temperature=temperature, max_tokens=max_tokens, seed=seed,
                       stop=stop, stream=True, **extra)
    return BlockingStream(settings, "/chat/completions", payload, model, stats)
