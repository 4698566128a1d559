"""The client against a real local HTTP server that fails on purpose."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.client.fake_openai import FakeOpenAI, Reply
from unfork.client import (
    APIError,
    AuthenticationError,
    ClientSettings,
    ContextOverflowError,
    EndpointUnreachableError,
    MultiClient,
    NotFoundError,
    OpenAIClient,
    SSEDecoder,
    StreamInterruptedError,
    SyncClient,
    make_client,
    normalize_base_url,
)

MSGS = [{"role": "user", "content": "hi"}]


def fast(url: str, **kw) -> ClientSettings:
    """Settings with tiny backoffs so retry tests run in milliseconds."""
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("backoff_max", 0.05)
    kw.setdefault("timeout", 5.0)
    return ClientSettings(url, **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server():
    with FakeOpenAI() as srv:
        yield srv


def run(coro):
    return asyncio.run(coro)


def test_503s_then_success_is_retried(server):
    server.push(*[Reply(status=503)] * 3, Reply(text="finally"))
    client = OpenAIClient(fast(server.url))
    result = run(client.chat(MSGS))
    assert result.text == "finally"
    assert result.finish_reason == "stop"
    assert result.usage.prompt_tokens == 7
    assert len(server.posts()) == 4
    s = client.stats
    assert (s.requests, s.attempts - 1, s.retries, s.failures) == (1, 4, 3, 0)  # one extra GET /models
    assert s.completion_tokens == 1


def test_503s_past_the_budget_raise_the_servers_message(server):
    server.push(*[Reply(status=503, body={"error": {"message": "loading model"}})] * 3)
    client = OpenAIClient(fast(server.url, max_retries=2))
    with pytest.raises(APIError) as info:
        run(client.chat(MSGS))
    assert info.value.status_code == 503
    assert "loading model" in str(info.value)
    assert "gave up after 3 attempts" in str(info.value)
    assert client.stats.failures == 1


def test_retry_after_is_honoured(server):
    server.push(Reply(status=429, headers={"Retry-After": "1"}), Reply(text="now"))
    client = OpenAIClient(fast(server.url), model="m")
    t0 = time.monotonic()
    assert run(client.chat(MSGS)).text == "now"
    waited = time.monotonic() - t0
    assert 1.0 <= waited < 3.0  # backoff alone would have been at most 0.05 s
    assert client.stats.retries == 1


def test_connection_refused_is_retried_then_explained():
    url = f"http://127.0.0.1:{free_port()}/v1"
    client = OpenAIClient(fast(url, max_retries=3), model="m")
    with pytest.raises(EndpointUnreachableError) as info:
        run(client.chat(MSGS))
    msg = str(info.value)
    assert url in msg and "gave up after 4 attempts" in msg
    assert info.value.hint and "--endpoint-url" in info.value.hint
    assert client.stats.attempts == 4 and client.stats.retries == 3


@pytest.mark.parametrize("status, cls", [(400, APIError), (401, AuthenticationError), (404, NotFoundError),
                                         (422, APIError)])
def test_client_errors_are_not_retried(server, status, cls):
    server.push(Reply(status=status, body={"error": {"message": "temperature must be >= 0", "type": "bad"}}))
    client = OpenAIClient(fast(server.url), model="m")
    with pytest.raises(cls) as info:
        run(client.chat(MSGS, temperature=-1))
    assert not isinstance(info.value, ContextOverflowError)
    assert "temperature must be >= 0" in str(info.value)
    assert info.value.status_code == status
    assert len(server.posts()) == 1
    assert client.stats.retries == 0 and client.stats.failures == 1


def test_plain_text_error_body_is_shown(server):
    server.push(Reply(status=400, body="Bad things\n happened"))
    with pytest.raises(APIError, match="Bad things happened"):
        run(OpenAIClient(fast(server.url), model="m").chat(MSGS))


def test_context_overflow_is_recognised(server):
    llama = {"error": {"code": 400, "message": "the request exceeds the available context size, try increasing it",
                       "type": "exceed_context_size_error", "n_prompt_tokens": 5000, "n_ctx": 4096}}
    vllm = {"object": "error", "message": "This model's maximum context length is 2048 tokens. However, you "
            "requested 2100 tokens (1900 in the messages, 200 in the completion).", "type": "BadRequestError",
            "code": 400}
    server.push(Reply(status=400, body=llama), Reply(status=400, body=vllm))
    client = OpenAIClient(fast(server.url), model="m")
    with pytest.raises(ContextOverflowError) as a:
        run(client.chat(MSGS))
    assert (a.value.n_ctx, a.value.n_prompt_tokens) == (4096, 5000)
    with pytest.raises(ContextOverflowError) as b:
        run(client.chat(MSGS))
    assert b.value.n_ctx == 2048
    assert "maximum context length is 2048" in str(b.value)
    assert len(server.posts()) == 2


def test_timeout_is_retried(server):
    server.push(Reply(text="late", delay=1.5), Reply(text="quick"))
    client = OpenAIClient(fast(server.url, timeout=0.3), model="m")
    t0 = time.monotonic()
    assert run(client.chat(MSGS)).text == "quick"
    assert time.monotonic() - t0 < 1.4
    assert client.stats.retries == 1


def test_dropped_connection_is_retried(server):
    server.push(Reply(drop=True), Reply(text="second try"))
    client = OpenAIClient(fast(server.url), model="m")
    assert run(client.chat(MSGS)).text == "second try"
    assert client.stats.retries == 1


def test_concurrency_limit_is_never_exceeded(server):
    server.default = Reply(text="x", delay=0.1)
    client = OpenAIClient(fast(server.url, max_concurrency=3), model="m")

    async def many():
        return await asyncio.gather(*(client.chat(MSGS) for _ in range(12)))

    t0 = time.monotonic()
    results = run(many())
    assert len(results) == 12
    assert server.max_in_flight == 3  # the limit is reached and never passed
    assert client.stats.max_in_flight == 3
    assert time.monotonic() - t0 >= 0.4  # 12 requests in waves of 3


def test_streaming_is_parsed(server):
    text = "The quick brown fox jumps over the lazy dog."
    server.push(Reply(text=text))
    client = OpenAIClient(fast(server.url))

    async def go():
        pieces = []
        async with client.stream_chat(MSGS, max_tokens=50) as stream:
            async for piece in stream:
                pieces.append(piece)
        return pieces, stream

    pieces, stream = run(go())
    assert "".join(pieces) == text
    assert len(pieces) == 9
    assert stream.text == text and stream.finish_reason == "stop"
    assert stream.usage.completion_tokens == 9
    body = server.posts()[-1]
    assert body["stream"] is True and body["model"] == "fake-model" and body["max_tokens"] == 50
    assert client.stats.completion_tokens == 9


def test_stream_retries_before_the_first_piece(server):
    server.push(Reply(status=502), Reply(text="fine now"))
    client = OpenAIClient(fast(server.url), model="m")
    assert run(client.stream_chat(MSGS).collect()).text == "fine now"
    assert client.stats.retries == 1


def test_stream_broken_midway_raises_with_partial_text(server):
    server.push(Reply(text="one two three four five", drop_after=2))
    client = OpenAIClient(fast(server.url), model="m")

    async def go():
        stream = client.stream_chat(MSGS)
        with pytest.raises(StreamInterruptedError, match="broke off"):
            async for _ in stream:
                pass
        return stream.text

    assert run(go()) == "one two "
    assert len(server.posts()) == 1  # never replayed once text was out


def test_empty_stream_and_error_event(server):
    server.push(Reply(pieces=[]), Reply(pieces=[], stream_error={"message": "slot unavailable", "code": 503}))
    client = OpenAIClient(fast(server.url), model="m")
    assert run(client.stream_chat(MSGS).collect()).text == ""
    with pytest.raises(APIError, match="slot unavailable"):
        run(client.stream_chat(MSGS).collect())


def test_completions_and_models(server):
    server.context_length = 2048
    server.push(Reply(text="completed"), Reply(text="a b c"))
    client = OpenAIClient(fast(server.url), model="m")
    assert run(client.complete("Once upon", max_tokens=5, stop=["\n"])).text == "completed"
    body = server.posts()[0]
    assert body["prompt"] == "Once upon" and body["stop"] == ["\n"] and "messages" not in body
    assert run(client.stream_complete("x").collect()).text == "a b c"
    models = run(client.list_models())
    assert [(m.id, m.context_length) for m in models] == [("fake-model", 2048)]
    assert run(client.context_window()) == 2048


def test_context_window_from_llama_props():
    with FakeOpenAI(props_n_ctx=1024) as srv:
        assert run(OpenAIClient(srv.url).context_window()) == 1024
    with FakeOpenAI() as srv:
        assert run(OpenAIClient(srv.url).context_window()) is None


def test_request_json_is_one_unretried_request_to_a_path_or_url():
    with FakeOpenAI(tokenize=True) as srv:
        client = OpenAIClient(fast(srv.url))
        assert run(client.request_json("POST", srv.root + "/tokenize", {"content": "a b c"})) == {"tokens": [0, 1, 2]}
        with pytest.raises(NotFoundError):
            run(client.request_json("POST", "/nowhere", {}))
        assert [path for _, path, _ in srv.requests] == ["/tokenize", "/v1/nowhere"]
    dead = OpenAIClient(fast(f"http://127.0.0.1:{free_port()}", connect_timeout=1))
    with pytest.raises(EndpointUnreachableError):  # the final error, not the client's internal retry signal
        run(dead.request_json("GET", "/models", timeout=1))


def test_health(server):
    assert run(OpenAIClient(server.url).health()) is True
    assert run(OpenAIClient(ClientSettings(f"http://127.0.0.1:{free_port()}", connect_timeout=1)).health()) is False


def test_extra_fields_and_defaults_reach_the_server(server):
    client = OpenAIClient(fast(server.url), model="granite")
    run(client.chat(MSGS, temperature=0.0, seed=3, response_format={"type": "json_object"}, top_p=0.5))
    body = server.posts()[-1]
    assert body == {"messages": MSGS, "temperature": 0.0, "seed": 3, "response_format": {"type": "json_object"},
                    "top_p": 0.5, "model": "granite"}


def test_api_key_is_sent():
    import httpx

    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json={"choices": [{"message": {"content": "k"}, "finish_reason": "stop"}]})

    with_key = OpenAIClient(ClientSettings("http://x/v1", api_key="sekrit"), model="m",
                            transport=httpx.MockTransport(handler))
    without = OpenAIClient(ClientSettings("http://x/v1"), model="m", transport=httpx.MockTransport(handler))
    assert run(with_key.chat(MSGS)).text == "k"
    assert run(without.chat(MSGS)).text == "k"
    assert seen == ["Bearer sekrit", None]


def test_one_client_across_event_loops(server):
    client = OpenAIClient(fast(server.url), model="m")
    assert run(client.chat(MSGS)).text == "ok"
    assert run(client.chat(MSGS)).text == "ok"


def test_sync_client(server):
    server.push(Reply(text="sync answer"), Reply(text="streamed sync answer"))
    with SyncClient(server.url) as client:
        assert client.chat(MSGS).text == "sync answer"
        assert "".join(client.stream_chat(MSGS)) == "streamed sync answer"
        assert client.health()
        assert client.stats.requests == 2


def test_multiclient_spreads_load():
    servers = [FakeOpenAI(default=Reply(text=f"from {i}", delay=0.05)).start() for i in range(3)]
    try:
        multi = MultiClient([fast(s.url, max_concurrency=2) for s in servers], model="m")

        async def many():
            return await asyncio.gather(*(multi.chat(MSGS) for _ in range(18)))

        texts = [r.text for r in run(many())]
        counts = [len(s.posts()) for s in servers]
        assert sum(counts) == 18
        assert counts == [6, 6, 6]  # least-in-flight with round-robin ties spreads evenly
        assert all(s.max_in_flight <= 2 for s in servers)
        assert sorted(set(texts)) == ["from 0", "from 1", "from 2"]
        assert multi.stats.requests == 18 and multi.stats.attempts == 18
    finally:
        for s in servers:
            s.stop()


def test_multiclient_round_robin_sequential():
    servers = [FakeOpenAI().start() for _ in range(2)]
    try:
        multi = MultiClient([fast(s.url) for s in servers], strategy="round-robin", model="m")

        async def seq():
            for _ in range(4):
                await multi.chat(MSGS)

        run(seq())
        assert [len(s.posts()) for s in servers] == [2, 2]
    finally:
        for s in servers:
            s.stop()


def test_multiclient_skips_a_dead_endpoint():
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with FakeOpenAI(default=Reply(text="alive")) as alive:
        multi = MultiClient([fast(dead, connect_timeout=1), fast(alive.url)], model="m", fail_threshold=2)

        async def many():
            out = []
            for _ in range(10):
                out.append((await multi.chat(MSGS)).text)
            async with multi.stream_chat(MSGS) as s:
                out.append("".join([p async for p in s]))
            return out

        assert run(many()) == ["alive"] * 11
        dead_client = multi.clients[0]
        assert dead_client.stats.attempts <= 2  # marked down after two failures, then skipped
        assert multi.stats.failures == 0
        assert multi.stats.retries == dead_client.stats.attempts


def test_make_client_and_urls():
    assert isinstance(make_client("localhost:8000"), OpenAIClient)
    assert isinstance(make_client(["a:1", "b:2"]), MultiClient)
    assert normalize_base_url("localhost:8000") == "http://localhost:8000/v1"
    assert normalize_base_url("http://h:1/v1/") == "http://h:1/v1"
    assert normalize_base_url("https://api.example.com/openai/v1") == "https://api.example.com/openai/v1"


events = st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=30)
                  .filter(lambda t: t.strip() == t), max_size=6)


@given(events, st.lists(st.booleans(), min_size=6, max_size=6))
def test_sse_decoder_round_trip(datas, comments):
    """Events survive keep-alive comments, CRLF line ends and multi-line data."""
    lines = []
    for i, data in enumerate(datas):
        if comments[i % 6]:
            lines += [": keep-alive", ""]
        if "\n" not in data and i % 2:
            lines += [f"data: {data[:5]}", f"data: {data[5:]}"]  # split over two data lines
            datas[i] = data[:5] + "\n" + data[5:]
        else:
            lines.append(f"data: {data}\r")
        lines.append("")
    dec = SSEDecoder()
    got = [d for line in lines if (d := dec.feed(line)) is not None]
    assert got == [d for d in datas]


# ------------------------------------------- the standard-library streaming path (chat -qq)


def blocking(url: str, **kw):
    from unfork.client import Stats, stream_chat_blocking

    stats = Stats()
    return stream_chat_blocking(fast(url, **kw), MSGS, model=kw.pop("model", None), stats=stats), stats


@pytest.mark.parametrize("http11", [False, True], ids=["http1.0", "http1.1-chunked"])
def test_blocking_streams_and_discovers_the_model(http11):
    with FakeOpenAI(http11=http11) as server:
        server.push(Reply(text="one two three four"))
        stream, stats = blocking(server.url)
        assert list(stream) == ["one ", "two ", "three ", "four"]
        assert (stream.text, stream.finish_reason, stream.usage.completion_tokens) == ("one two three four", "stop", 4)
        assert server.posts()[-1]["model"] == "fake-model" and server.posts()[-1]["stream"] is True


def test_async_stream_over_chunked_keepalive():
    with FakeOpenAI(http11=True) as server:
        client = OpenAIClient(fast(server.url))

        async def twice():
            a = await client.stream_chat(MSGS).collect()
            b = await client.chat(MSGS)
            return a.text, b.text

        assert run(twice()) == ("ok", "ok")


def test_blocking_retries_503_and_honours_retry_after(server):
    server.push(Reply(status=503), Reply(status=429, headers={"Retry-After": "1"}), Reply(text="done"))
    stream, stats = blocking(server.url)
    t0 = time.monotonic()
    assert "".join(stream) == "done"
    assert time.monotonic() - t0 >= 1.0
    assert (stats.retries, stats.failures) == (2, 0)


def test_blocking_connection_refused_and_400():
    url = f"http://127.0.0.1:{free_port()}/v1"
    stream, stats = blocking(url, max_retries=2)
    with pytest.raises(EndpointUnreachableError, match="gave up after 3 attempts"):
        list(stream)
    with FakeOpenAI() as srv:
        srv.push(Reply(status=400, body={"error": {"message": "the request exceeds the available context size",
                                                   "type": "exceed_context_size_error", "n_ctx": 512}}))
        stream, stats = blocking(srv.url)
        with pytest.raises(ContextOverflowError) as info:
            list(stream)
        assert info.value.n_ctx == 512 and len(srv.posts()) == 1


def test_blocking_timeout_then_broken_stream(server):
    server.push(Reply(text="slow", delay=1.5), Reply(text="quick"))
    stream, stats = blocking(server.url, timeout=0.3)
    assert "".join(stream) == "quick" and stats.retries == 1
    server.push(Reply(text="a b c d", drop_after=2))
    stream, _ = blocking(server.url)
    with pytest.raises(StreamInterruptedError):
        list(stream)
    assert stream.text == "a b "
