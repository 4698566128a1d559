"""A real, scriptable OpenAI-compatible HTTP server for tests and benchmarks.

It listens on 127.0.0.1 (random port) in a background thread and answers
``/v1/chat/completions``, ``/v1/completions`` (JSON or SSE), ``/v1/models``,
``/health``, ``/props`` and (``tokenize=True``) llama.cpp's ``/tokenize``. Each POST takes the next scripted :class:`Reply`
(or ``on_chat(body)``'s, or the default), so a test can make it fail on purpose:
error statuses with headers, slow answers, dropped connections, streams that
break off. It records every request and the most requests it had in flight.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    text: str = "ok"
    status: int = 200
    body: Any = None
    """For an error status: the JSON (or text) body; default: an OpenAI-style error."""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering."""
    chunk_delay: float = 0.0
    """Seconds between streamed pieces."""
    pieces: list[str] | None = None
    """How a streamed answer is cut (default: word by word)."""
    drop: bool = False
    """Close the connection without any answer."""
    drop_after: int | None = None
    """Streaming: close the connection after this many pieces."""
    finish_reason: str = "stop"
    stream_error: dict[str, Any] | None = None
    """Streaming: send this as an ``{"error": ...}`` event after the pieces, then stop."""
    choices: list[str] | None = None
    """These texts as the choices (a request's ``n``), instead of ``text`` alone. Streamed, they take turns
    word by word and each ends with its own event, so the shorter ones end first."""
    timings: dict[str, Any] | None = None
    """llama.cpp's ``timings``; then, as llama.cpp does, ``usage`` counts only the first choice."""


def split_words(text: str) -> list[str]:
    out, cur = [], ""
    for ch in text:
        cur += ch
        if ch == " ":
            out.append(cur)
            cur = ""
    if cur:
        out.append(cur)
    return out


class FakeOpenAI:
    def __init__(self, replies: list[Reply] | None = None, *, default: Reply | None = None,
                 model: str = "fake-model", context_length: int | None = None, props_n_ctx: int | None = None,
                 on_chat: Callable[[dict[str, Any]], Reply | None] | None = None, http11: bool = False,
                 tokenize: bool = False):
        self.http11 = http11
        self.tokenize = tokenize
        """Answer llama.cpp's ``POST /tokenize``, one token per word."""
        """HTTP/1.1 with keep-alive and chunked streams (as llama-server does) instead of HTTP/1.0."""
        self.replies: collections.deque[Reply] = collections.deque(replies or [])
        self.default = default or Reply()
        self.model = model
        self.context_length = context_length
        self.props_n_ctx = props_n_ctx
        self.on_chat = on_chat
        self.requests: list[tuple[str, str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> FakeOpenAI:
        fake = self

        class Handler(_Handler):
            server_fake = fake
            protocol_version = "HTTP/1.1" if fake.http11 else "HTTP/1.0"

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.handle_error = lambda request, client_address: None  # clients hanging up on purpose
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.root + "/v1"

    def push(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def posts(self) -> list[Any]:
        """The JSON bodies of the POSTs received so far."""
        return [body for method, _, body in self.requests if method == "POST"]

    def next_reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            if self.replies:
                return self.replies.popleft()
        if self.on_chat:
            reply = self.on_chat(body)
            if reply is not None:
                return reply
        return self.default


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeOpenAI
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        raw = (json.dumps(data) if not isinstance(data, str) else data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        fake = self.server_fake
        with fake._lock:
            fake.requests.append(("GET", self.path, None))
        if self.path == "/v1/models":
            entry: dict[str, Any] = {"id": fake.model, "object": "model", "owned_by": "test"}
            if fake.context_length:
                entry["max_model_len"] = fake.context_length
            self._json(200, {"object": "list", "data": [entry]})
        elif self.path == "/health":
            self._json(200, {"status": "ok"})
        elif self.path == "/props" and fake.props_n_ctx:
            self._json(200, {"default_generation_settings": {"n_ctx": fake.props_n_ctx}, "total_slots": 1})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}", "code": 404}})

    def do_POST(self) -> None:
        fake = self.server_fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = raw.decode(errors="replace")
        with fake._lock:
            fake.requests.append(("POST", self.path, body))
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            if self.path == "/tokenize" and fake.tokenize and isinstance(body, dict):  # llama.cpp's: a word a token
                self._json(200, {"tokens": list(range(len(str(body.get("content", "")).split())))})
                return
            if self.path not in ("/v1/chat/completions", "/v1/completions"):
                self._json(404, {"error": {"message": f"no route {self.path}"}})
                return
            reply = fake.next_reply(body if isinstance(body, dict) else {})
            if reply.delay:
                time.sleep(reply.delay)
            if reply.drop:
                self.close_connection = True
                return
            if reply.status >= 400:
                data = reply.body if reply.body is not None else {
                    "error": {"message": f"scripted failure {reply.status}", "code": reply.status}}
                self._json(reply.status, data, reply.headers)
                return
            chat = self.path.endswith("/chat/completions")
            if isinstance(body, dict) and body.get("stream"):
                self._stream(reply, chat)
            else:
                self._whole(reply, chat, body)
        finally:
            with fake._lock:
                fake.in_flight -= 1

    def _whole(self, reply: Reply, chat: bool, body: Any) -> None:
        texts = reply.choices if reply.choices is not None else [reply.text]
        choices = []
        for i, text in enumerate(texts):
            choice: dict[str, Any] = {"index": i, "finish_reason": reply.finish_reason}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            choices.append(choice)
        counted = texts[:1] if reply.timings is not None else texts
        completion = sum(len(t.split()) for t in counted)
        extra = {"timings": reply.timings} if reply.timings is not None else {}
        self._json(200, {
            "id": "cmpl-1", "object": "chat.completion" if chat else "text_completion",
            "model": self.server_fake.model, "choices": choices, **extra,
            "usage": {"prompt_tokens": 7, "completion_tokens": completion, "total_tokens": 7 + completion},
        }, reply.headers)

    def _stream(self, reply: Reply, chat: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        chunked = self.protocol_version == "HTTP/1.1"
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.end_headers()
        w = _Chunked(self.wfile) if chunked else self.wfile
        w.write(b": keep-alive\n\n")
        w.flush()
        texts = reply.choices if reply.choices is not None else [reply.text]
        streams = [reply.pieces if reply.pieces is not None and len(texts) == 1 else split_words(t) for t in texts]
        model = self.server_fake.model
        events = _interleave(streams)  # (choice, piece or None for its end); the choices take turns
        if len(streams) == 1:  # one choice: its end goes with the usage, in the last event
            events = events[:-1]
        for i, (index, piece) in enumerate(events):
            if reply.drop_after is not None and i >= reply.drop_after:
                self.close_connection = True
                return
            if piece is None:
                choice: dict[str, Any] = {"index": index, "delta": {}, "finish_reason": reply.finish_reason}
            elif chat:
                delta = {"content": piece} if i else {"role": "assistant", "content": piece}
                choice = {"index": index, "delta": delta, "finish_reason": None}
            else:
                choice = {"index": index, "text": piece, "finish_reason": None}
            event = f"data: {json.dumps({'id': 'c', 'model': model, 'choices': [choice]})}\n\n".encode()
            if i == 1:  # one event cut in the middle of a line, in two writes
                w.write(event[:9])
                w.flush()
                time.sleep(0.002)
                w.write(event[9:])
            else:
                w.write(event)
            w.flush()
            if i == 2:
                w.write(b": ping\n\n")
            if reply.chunk_delay:
                time.sleep(reply.chunk_delay)
        if reply.stream_error is not None:
            w.write(f"data: {json.dumps({'error': reply.stream_error})}\n\n".encode())
            w.flush()
            return
        counted = streams[:1] if reply.timings is not None else streams
        last: dict[str, Any] = {"id": "c", "model": model, "choices": [],
                                "usage": {"prompt_tokens": 7, "completion_tokens": sum(map(len, counted))}}
        if len(streams) == 1:
            last["choices"] = [{"index": 0, "delta": {}, "finish_reason": reply.finish_reason}]
        if reply.timings is not None:
            last["timings"] = reply.timings
        w.write(f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode())
        w.flush()
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()


def _interleave(streams: list[list[str]]) -> list[tuple[int, str | None]]:
    """The pieces of several choices as a server streams them: a piece of each in turn, and each choice's
    end (None) right after its last piece, so shorter choices end first."""
    out: list[tuple[int, str | None]] = []
    for step in range(max(map(len, streams)) + 1):
        for index, pieces in enumerate(streams):
            if step < len(pieces):
                out.append((index, pieces[step]))
            elif step == len(pieces):
                out.append((index, None))
    return out


class _Chunked:
    """HTTP/1.1 chunked transfer encoding over a socket file."""

    def __init__(self, raw: Any):
        self.raw = raw

    def write(self, data: bytes) -> None:
        if data:
            self.raw.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def flush(self) -> None:
        self.raw.flush()


if __name__ == "__main__":  # python -m tests.client.fake_openai [answer]: serve until killed
    import sys

    with FakeOpenAI(default=Reply(text=" ".join(sys.argv[1:]) or "Hello from the fake server.")) as srv:
        print(srv.url, flush=True)
        threading.Event().wait()
