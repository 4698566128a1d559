"""One client for every OpenAI-compatible endpoint unfork talks to.

Chat, data generation and evaluation all go through :class:`OpenAIClient`
(one endpoint) or :class:`MultiClient` (several, e.g. repeated
``--endpoint-url``), both asyncio-first over httpx; :class:`SyncClient` wraps
either for plain code. :func:`stream_chat_blocking` is a start-up-light,
standard-library-only path for one streamed answer (``chat -qq``).

What every path does for its callers:

- retries with exponential backoff and jitter on 429 (honouring
  ``Retry-After``), 408, 5xx, connection errors and timeouts; never on other
  4xx, which raise an :class:`APIError` carrying the server's own message;
- recognises a prompt that does not fit the model's window
  (:class:`ContextOverflowError`), so callers can re-chunk or trim;
- limits the requests in flight with one semaphore per endpoint;
- counts requests, retries, failures and tokens (:class:`Stats`).

A streamed answer is retried only while nothing has been yielded yet.

``unfork.client.base`` (settings, errors, parsing) needs only the standard
library; the httpx-based classes load on first use.
"""

from __future__ import annotations

from typing import Any

from unfork.client.base import (
    APIError,
    AuthenticationError,
    ChatResult,
    ClientError,
    ClientSettings,
    ContextOverflowError,
    EndpointUnreachableError,
    FatalClientError,
    Message,
    ModelInfo,
    NotFoundError,
    RequestTimeoutError,
    SSEDecoder,
    Stats,
    StreamInterruptedError,
    Usage,
    normalize_base_url,
    redact_url,
)

_ASYNC = ("OpenAIClient", "MultiClient", "ChatStream", "SyncClient", "make_client")
_BLOCKING = ("stream_chat_blocking", "BlockingStream")

__all__ = [
    "APIError", "AuthenticationError", "BlockingStream", "ChatResult", "ChatStream", "ClientError",
    "ClientSettings", "ContextOverflowError", "EndpointUnreachableError", "FatalClientError", "Message", "ModelInfo",
    "MultiClient", "NotFoundError", "OpenAIClient", "RequestTimeoutError", "SSEDecoder", "Stats",
    "StreamInterruptedError", "SyncClient", "Usage", "make_client", "normalize_base_url",
    "redact_url", "stream_chat_blocking",
]


def __getattr__(name: str) -> Any:
    if name in _ASYNC:
        from unfork.client import aio

        return getattr(aio, name)
    if name in _BLOCKING:
        from unfork.client import blocking

        return getattr(blocking, name)
    raise AttributeError(f"module 'unfork.client' has no attribute {name!r}")
