"""The OpenAI-compatible layer of unfork's own server, with a scripted engine (no torch)."""

from __future__ import annotations

import json
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from unfork.serve.openai_api import Generation, SamplingParams, StopScanner, create_app  # noqa: E402


class ScriptedEngine:
    """Answers every prompt with the same pieces; one token per character; records what it saw."""

    context_length = 200

    def __init__(self, pieces: list[str]):
        self.pieces = pieces
        self.seen: list[tuple[list[int], SamplingParams]] = []
        self.cancelled = 0

    def encode_chat(self, messages, tools=None):
        text = "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"
        return [ord(c) for c in text]

    def encode(self, text):
        return [ord(c) for c in text]

    def generate(self, ids, params, cancel: threading.Event, result: Generation):
        self.seen.append((ids, params))
        result.finish_reason = "stop"
        sent = 0
        try:
            for piece in self.pieces:
                if cancel.is_set():
                    return
                if result.completion_tokens + len(piece) > params.max_tokens:
                    piece = piece[: params.max_tokens - result.completion_tokens]
                    result.completion_tokens += len(piece)
                    result.finish_reason = "length"
                    sent += 1
                    yield piece
                    return
                result.completion_tokens += len(piece)
                sent += 1
                yield piece
        finally:
            if sent < len(self.pieces) and cancel.is_set():
                self.cancelled += 1


KEY = "sk-test-123"


@pytest.fixture
def engine():
    return ScriptedEngine(["Hel", "lo", " wor", "ld", "!"])


@pytest.fixture
def client(engine):
    return TestClient(create_app(engine, "tiny", api_key=KEY), headers={"Authorization": f"Bearer {KEY}"})


def sse_events(response) -> list:
    events = []
    for line in response.iter_lines():
        if not line:
            continue
        assert line.startswith("data: "), line
        data = line[len("data: "):]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


CHAT = {"model": "anything", "messages": [{"role": "user", "content": "hi"}]}


def test_chat_completion(client, engine):
    r = client.post("/v1/chat/completions", json={**CHAT, "temperature": 0, "max_tokens": 50})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "tiny"
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello world!"},
                                "logprobs": None, "finish_reason": "stop"}]
    prompt_len = len("<user>hi<assistant>")
    assert body["usage"] == {"prompt_tokens": prompt_len, "completion_tokens": 12, "total_tokens": prompt_len + 12}
    ids, params = engine.seen[0]
    assert params.temperature == 0 and params.max_tokens == 50


def test_max_tokens_defaults_to_the_room_left_and_is_capped(client, engine):
    client.post("/v1/chat/completions", json=CHAT)
    client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 10_000})
    room = engine.context_length - len("<user>hi<assistant>")
    assert [p.max_tokens for _, p in engine.seen] == [room, room]


def test_length_finish(client):
    body = client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 4}).json()
    assert body["choices"][0]["message"]["content"] == "Hell"
    assert body["choices"][0]["finish_reason"] == "length"


def test_stop_string_across_pieces(client, engine):
    body = client.post("/v1/chat/completions", json={**CHAT, "stop": ["o w"]}).json()
    assert body["choices"][0]["message"]["content"] == "Hell"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert engine.cancelled == 1, "generation must stop once a stop string appears"


def test_chat_streaming_format(client):
    with client.stream("POST", "/v1/chat/completions",
                       json={**CHAT, "stream": True, "stream_options": {"include_usage": True}}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "tiny" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Hello world!"
    assert [c["choices"][0]["delta"]["content"] for c in chunks[1:6]] == ["Hel", "lo", " wor", "ld", "!"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and chunks[-2]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 12


def test_streaming_holds_back_only_a_possible_stop(client):
    with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True, "stop": "ld?"}) as r:
        events = sse_events(r)
    pieces = [e["choices"][0]["delta"].get("content") for e in events[1:-2]]
    # An "l" or "ld" could start "ld?", so it waits until the next piece shows it did not.
    assert pieces == ["He", "llo", " wor", "ld!"]


def test_completions(client, engine):
    body = client.post("/v1/completions", json={"model": "x", "prompt": "Once", "max_tokens": 5}).json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "Hello" and body["choices"][0]["finish_reason"] == "length"
    assert engine.seen[0][0] == [ord(c) for c in "Once"]
    with client.stream("POST", "/v1/completions", json={"prompt": ["Once"], "stream": True}) as r:
        events = sse_events(r)
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == "Hello world!"
    assert events[-2]["choices"][0]["finish_reason"] == "stop"


def test_models_and_health(engine):
    client = TestClient(create_app(engine, "tiny", api_key=KEY))
    assert client.get("/health").json() == {"status": "ok"}  # public, like llama-server's
    assert client.get("/v1/models").status_code == 401
    r = client.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    assert [m["id"] for m in r.json()["data"]] == ["tiny"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY},
                                     {"Authorization": f"Basic {KEY}"}, {"X-Api-Key": "nope"}])
def test_api_key_required(engine, headers):
    client = TestClient(create_app(engine, "tiny", api_key=KEY))
    for method, path in [("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("GET", "/v1/models"),
                         ("GET", "/v1/unknown")]:
        r = client.request(method, path, json=CHAT, headers=headers)
        assert r.status_code == 401, (path, headers)
        assert r.json()["error"]["type"] == "authentication_error"
    assert engine.seen == []


def test_x_api_key_header_accepted(engine):
    client = TestClient(create_app(engine, "tiny", api_key=KEY))
    assert client.post("/v1/chat/completions", json=CHAT, headers={"X-Api-Key": KEY}).status_code == 200


def test_no_key_configured_means_open(engine):
    assert TestClient(create_app(engine, "tiny")).post("/v1/chat/completions", json=CHAT).status_code == 200


@pytest.mark.parametrize(("payload", "needle"), [
    ({"messages": []}, "non-empty list"),
    ({"messages": [{"content": "x"}]}, "role"),
    ({**CHAT, "n": 2}, "'n'"),
    ({**CHAT, "temperature": "hot"}, "'temperature'"),
    ({**CHAT, "temperature": 3}, "between"),
    ({**CHAT, "stop": [1]}, "'stop'"),
    ({"messages": [{"role": "user", "content": "x" * 300}]}, "context window"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "only text"),
])
def test_bad_chat_requests(client, engine, payload, needle):
    r = client.post("/v1/chat/completions", json=payload)
    assert r.status_code == 400
    assert needle in r.json()["error"]["message"]
    assert engine.seen == []


def test_bad_json_and_bad_prompt(client):
    r = client.post("/v1/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = client.post("/v1/completions", json={"prompt": {"a": 1}})
    assert r.status_code == 400 and "'prompt'" in r.json()["error"]["message"]


def test_text_parts_are_joined(client, engine):
    msg = {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    client.post("/v1/chat/completions", json={"messages": [msg]})
    assert engine.seen[0][0] == [ord(c) for c in "<user>ab<assistant>"]


def test_stop_scanner_examples():
    s = StopScanner(["</s>", "\n\n"])
    assert s.feed("abc<") == ("abc", False)
    assert s.feed("/") == ("", False)
    assert s.feed("x") == ("</x", False)
    assert s.feed("\n") == ("", False)
    assert s.feed("\nrest") == ("", True)
    # "b" is in "<b" but "<b<", which would begin earlier, may still come: wait, and cut where it begins
    s = StopScanner(["b", "<b<"])
    assert s.feed("x<b") == ("x", False)
    assert s.feed("<") == ("", True)
    s = StopScanner(["b", "<b<"])
    assert s.feed("x<b") == ("x", False)
    assert s.feed("y") == ("<", True)  # it did not come: cut at "b"
    s = StopScanner(["b", "<b<"])
    assert s.feed("x<b") == ("x", False)
    assert s.flush() == ("<", True)  # the text ended: its first stop is "b"


@given(text=st.text(alphabet="ab\n<>", max_size=30), stops=st.lists(st.text(alphabet="ab\n<>", min_size=1,
                                                                            max_size=3), max_size=3),
       cuts=st.lists(st.integers(0, 30), max_size=8))
def test_stop_scanner_equals_cutting_the_whole_text(text, stops, cuts):
    bounds = sorted({0, len(text), *[c for c in cuts if c <= len(text)]})
    out, hit = "", False
    scanner = StopScanner(stops)
    for a, b in zip(bounds, bounds[1:], strict=False):
        piece, hit = scanner.feed(text[a:b])
        out += piece
        if hit:
            break
    if not hit:
        tail, hit = scanner.flush()
        out += tail
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    expected = text[:min(hits)] if hits else text
    # A stop that straddles the cut is found as soon as its last piece arrives: the same cut.
    assert out == expected and hit == bool(hits)
    assert hit == bool(hits)
