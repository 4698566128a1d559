"""The transport-free half of the client: settings, results, errors, retry policy, SSE parsing.

Imports only the standard library, so the quick paths (``chat -qq``) can use
it without loading httpx or asyncio.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

from unfork.errors import UsageError, UserError

log = logging.getLogger("unfork.client")

Message = dict[str, Any]

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
RETRY_AFTER_MAX = 120.0  # a server asking for longer than this gets this


# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class ClientSettings:
    """How to reach one endpoint and how hard to try."""

    base_url: str
    """The API root, e.g. ``http://127.0.0.1:8000/v1``; a bare ``host:port`` gets ``/v1``."""
    api_key: str | None = None
    """Sent as ``Authorization: Bearer <key>`` when set."""
    timeout: float = 600.0
    """Seconds to wait for a response, or between two chunks of a streamed one."""
    connect_timeout: float = 10.0
    """Seconds to wait for the TCP connection."""
    max_retries: int = 5
    """Retries after the first attempt (0: try once)."""
    backoff_base: float = 0.5
    """First retry waits about this long; each later one twice as long."""
    backoff_max: float = 20.0
    """Longest wait between two attempts (a ``Retry-After`` may ask for more)."""
    max_concurrency: int = 8
    """Requests in flight at once through this client."""
    verify_tls: bool = True
    """Check the server's TLS certificate (https endpoints)."""


def normalize_base_url(url: str) -> str:
    """``localhost:8000`` -> ``http://localhost:8000/v1``; keeps any explicit path.

    Raises :class:`UsageError` for a URL no retry could make work (another scheme, no host, a bad port).
    """
    given = url
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or not _port_ok(parts):
        raise UsageError(f"endpoint URL {redact_url(given)!r} is not an http(s) URL with a host",
                         hint="give it as http://HOST:PORT/v1 or https://HOST/v1")
    path = parts.path.rstrip("/")
    if not path:
        path = "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _port_ok(parts: SplitResult) -> bool:
    try:
        parts.port  # noqa: B018 - reading it checks it: a port that is not a number in range raises
    except ValueError:
        return False
    return True


def redact_url(url: str) -> str:
    """``url`` with the password of ``user:password@`` replaced by ``***``, so it can be shown and stored."""
    scheme, sep, rest = url.partition("://")
    prefix = scheme + sep if sep else ""
    rest = rest if sep else url
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    userinfo, at, host = rest[:end].rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{prefix}{userinfo.split(':', 1)[0]}:***@{host}{rest[end:]}"


_URL_WITH_USER = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#]*@")


def redact_urls_in(text: str) -> str:
    """``text`` with :func:`redact_url` applied to every URL in it that carries a user."""
    return _URL_WITH_USER.sub(lambda m: redact_url(m.group(0)), text)


def _root_url(base_url: str) -> str:
    """The server root (where llama.cpp and vLLM put /health and /props)."""
    return base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url


# ----------------------------------------------------------------- results


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @classmethod
    def from_json(cls, data: Any) -> Usage:
        if not isinstance(data, dict):
            return cls()
        return cls(int(data.get("prompt_tokens") or 0), int(data.get("completion_tokens") or 0))


@dataclass
class ChatResult:
    """One answer (the first choice) plus the server's whole reply in ``raw``."""

    text: str
    finish_reason: str | None
    usage: Usage
    model: str | None
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def texts(self) -> list[str]:
        """Every choice's text (for requests with ``n`` > 1)."""
        return [text for text, _ in self.choices]

    @property
    def choices(self) -> list[tuple[str, str | None]]:
        """Every choice's (text, finish_reason), in the order of the choices' ``index``."""
        raw = [c for c in self.raw.get("choices") or [] if isinstance(c, dict)]
        if not raw:
            return [(self.text, self.finish_reason)]
        raw.sort(key=lambda c: c.get("index") if isinstance(c.get("index"), int) else 0)
        return [(_choice_text(c), c.get("finish_reason")) for c in raw]


@dataclass
class ModelInfo:
    id: str
    context_length: int | None
    raw: dict[str, Any] = field(repr=False, default_factory=dict)


@dataclass
class Stats:
    """Counters for one client; ``as_dict()`` for logs and run reports."""

    requests: int = 0
    """Calls made (chat, complete, a stream...), however many attempts each took."""
    attempts: int = 0
    """HTTP requests sent."""
    retries: int = 0
    failures: int = 0
    """Calls that ended in an error."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    in_flight: int = 0
    max_in_flight: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


# ------------------------------------------------------------------ errors


class ClientError(UserError):
    """Talking to a model endpoint failed; the CLI prints it without a traceback."""

    def __init__(self, message: str, hint: str | None = None):
        # Messages name URLs (and quote errors that do): a password in one must not reach a screen or a log.
        super().__init__(redact_urls_in(message), hint=redact_urls_in(hint) if hint else hint)


class FatalClientError(ClientError):
    """Every later request to this endpoint would fail the same way, so a batch job stops instead of
    recording one failure per request."""


class EndpointUnreachableError(FatalClientError):
    """No connection could be made (refused, DNS, reset)."""


class RequestTimeoutError(ClientError):
    """The server did not answer in time."""


class StreamInterruptedError(ClientError):
    """A streamed answer broke off after part of it had arrived."""


class APIError(ClientError):
    """The server answered with an error status; ``server_message`` is what it said."""

    def __init__(self, message: str, *, status_code: int, server_message: str = "", url: str = "",
                 hint: str | None = None, body: Any = None):
        super().__init__(message, hint=hint)
        self.status_code = status_code
        self.server_message = server_message
        self.url = redact_url(url)
        self.body = body


class AuthenticationError(APIError, FatalClientError):
    """401 or 403: a missing or wrong API key."""


class NotFoundError(APIError, FatalClientError):
    """404: a wrong URL or an unknown model name."""


class ContextOverflowError(APIError):
    """The prompt plus ``max_tokens`` does not fit the model's context window.

    ``n_ctx`` and ``n_prompt_tokens`` hold what the server said, when it said it.
    """

    def __init__(self, *args: Any, n_ctx: int | None = None, n_prompt_tokens: int | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.n_ctx = n_ctx
        self.n_prompt_tokens = n_prompt_tokens


_OVERFLOW = re.compile(
    r"context length|context window|context size|context_length_exceeded|exceed_context_size"
    r"|maximum context|too many tokens|prompt is too long|input is too long|exceeds the model"
    r"|max_new_tokens. must be <=|input is too large",
    re.IGNORECASE,
)
_NCTX = re.compile(r"(?:maximum context length is|context window of|context size of|n_ctx\D{0,4})\s*(\d+)",
                   re.IGNORECASE)


def _server_message(body: Any, text: str) -> str:
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            for key in ("message", "detail", "error", "msg"):
                if isinstance(err.get(key), str):
                    return err[key]
        if isinstance(err, str):
            return err
        if isinstance(body.get("detail"), str):
            return body["detail"]
    return " ".join(text.split())[:500]


def _error_for_status(status: int, body: Any, text: str, url: str) -> APIError:
    msg = _server_message(body, text)
    shown = f"{url} answered {status}" + (f": {msg}" if msg else "")
    err_obj = body.get("error") if isinstance(body, dict) else None
    err_fields = err_obj if isinstance(err_obj, dict) else {}
    kind = " ".join(str(err_fields.get(k, "")) for k in ("type", "code"))
    if status in (400, 413, 422) and (_OVERFLOW.search(msg) or _OVERFLOW.search(kind)):
        n_ctx = err_fields.get("n_ctx")
        if not isinstance(n_ctx, int):
            m = _NCTX.search(msg)
            n_ctx = int(m.group(1)) if m else None
        n_prompt = err_fields.get("n_prompt_tokens")
        return ContextOverflowError(
            shown, status_code=status, server_message=msg, url=url, body=body,
            hint="shorten the prompt, lower max_tokens, or serve the model with a larger context",
            n_ctx=n_ctx, n_prompt_tokens=n_prompt if isinstance(n_prompt, int) else None)
    if status in (401, 403):
        return AuthenticationError(shown, status_code=status, server_message=msg, url=url, body=body,
                                   hint="check the API key (--api-key)")
    if status == 404:
        return NotFoundError(shown, status_code=status, server_message=msg, url=url, body=body,
                             hint="check that the endpoint URL ends in /v1 and that the model name exists")
    return APIError(shown, status_code=status, server_message=msg, url=url, body=body)


class _Retryable(Exception):
    """Internal: an attempt failed in a way worth another try."""

    def __init__(self, error: ClientError, retry_after: float | None = None):
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


def _retry_after(headers: Any) -> float | None:
    """Seconds from ``Retry-After`` (seconds or an HTTP date) or ``retry-after-ms``."""
    ms = headers.get("retry-after-ms")
    if ms:
        with contextlib.suppress(ValueError):
            return max(0.0, float(ms) / 1000)
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import email.utils

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# ---------------------------------------------------------------- retrying


class _Attempts:
    """The retry loop's state for one call: counts, backoff, the final error."""

    def __init__(self, settings: ClientSettings, stats: Stats):
        self.settings = settings
        self.stats = stats
        self.number = 0
        stats.requests += 1

    def delay(self, retry_after: float | None) -> float:
        s = self.settings
        backoff = min(s.backoff_max, s.backoff_base * (2 ** (self.number - 1)))
        backoff *= 0.5 + random.random() / 2  # jitter, so parallel callers spread out
        if retry_after is not None:
            return max(backoff, min(retry_after, max(RETRY_AFTER_MAX, s.backoff_max)))
        return backoff

    def next_delay(self, r: _Retryable) -> float:
        """Seconds to wait before the next attempt; raises the error when none is left."""
        self.number += 1
        if self.number > self.settings.max_retries:
            self.stats.failures += 1
            err = r.error
            if self.number > 1:
                err.message = f"{err.message} (gave up after {self.number} attempts)"
                err.args = (err.message,)
            raise err from r.__cause__
        self.stats.retries += 1
        wait = self.delay(r.retry_after)
        log.info("attempt %d failed (%s); retrying in %.2fs", self.number, r.error.message, wait)
        return wait

    def gave_up(self) -> None:
        self.stats.failures += 1


# ------------------------------------------------------------------ parsing


def _choice_text(choice: dict[str, Any]) -> str:
    msg = choice.get("message")
    if isinstance(msg, dict):
        return msg.get("content") or ""
    return choice.get("text") or ""


def _context_length(entry: dict[str, Any]) -> int | None:
    for key in ("max_model_len", "context_length", "context_window", "max_context_length", "n_ctx"):
        if isinstance(entry.get(key), int):
            return entry[key]
    meta = entry.get("meta")
    if isinstance(meta, dict) and isinstance(meta.get("n_ctx"), int):
        return meta["n_ctx"]
    return None


def _parse_models(data: Any) -> list[ModelInfo]:
    entries = data.get("data") if isinstance(data, dict) else data if isinstance(data, list) else None
    if not isinstance(entries, list):
        entries = data.get("models") if isinstance(data, dict) else None
    out = []
    for e in entries or []:
        if isinstance(e, dict) and (e.get("id") or e.get("name") or e.get("model")):
            out.append(ModelInfo(str(e.get("id") or e.get("name") or e.get("model")), _context_length(e), e))
    return out


def _payload(**fields: Any) -> dict[str, Any]:
    out = {k: v for k, v in fields.items() if v is not None}
    if isinstance(out.get("stop"), tuple):
        out["stop"] = list(out["stop"])
    return out


def _load_chunk(data: str, url: str) -> dict[str, Any] | None:
    """One streamed event's JSON (None when it is not an object); an error event raises the server's error."""
    try:
        chunk = json.loads(data)
    except ValueError:
        raise _Retryable(APIError(f"{url} streamed something that is not JSON: {data[:200]!r}",
                                  status_code=200, url=url)) from None
    if not isinstance(chunk, dict):
        return None
    if chunk.get("error"):
        raise _error_for_status(500, chunk, data, url)
    return chunk


def _chunk_piece(choice: dict[str, Any]) -> str:
    """The text a streamed choice adds: a chat ``delta``'s content or a completion's ``text``."""
    delta = choice.get("delta")
    return (delta.get("content") if isinstance(delta, dict) else choice.get("text")) or ""


def _parse_chunk(data: str, url: str) -> tuple[str, str | None, Usage | None, str | None]:
    """One streamed event: (text piece, finish_reason, usage, model), the last three when present."""
    chunk = _load_chunk(data, url)
    if chunk is None:
        return "", None, None, None
    usage = Usage.from_json(chunk["usage"]) if isinstance(chunk.get("usage"), dict) else None
    model = chunk.get("model") if isinstance(chunk.get("model"), str) else None
    choices = chunk.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return "", None, usage, model
    choice = choices[0]
    return _chunk_piece(choice), choice.get("finish_reason") or None, usage, model


class SSEDecoder:
    """Server-sent events, line by line: ``feed(line)`` returns an event's data when one is complete.

    Comment lines (``: keep-alive``) and fields other than ``data`` are
    ignored; several ``data:`` lines in one event are joined with newlines.
    """

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> str | None:
        line = line.rstrip("\r\n")
        if not line:
            return self.flush()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        return None

    def flush(self) -> str | None:
        if not self._data:
            return None
        data, self._data = "\n".join(self._data), []
        return data


def _status_failure(status: int, text: str, headers: Any, url: str) -> Exception:
    """The exception for an HTTP error reply: ``_Retryable`` for statuses worth retrying, else the final error."""
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = None
    err = _error_for_status(status, body, text, url)
    return _Retryable(err, _retry_after(headers)) if status in RETRY_STATUSES else err
