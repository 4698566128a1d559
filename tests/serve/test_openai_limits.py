"""What unfork's own server does with abusive requests: huge bodies, bad JSON, wild numbers, clients that leave."""

from __future__ import annotations

import asyncio
import json
import threading

import httpx
import pytest

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from tests.serve.test_openai_api import KEY, ScriptedEngine  # noqa: E402
from unfork.serve import openai_api as api  # noqa: E402

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def engine():
    return ScriptedEngine(["Hel", "lo", " wor", "ld", "!"])


@pytest.fixture
def client(engine):
    return TestClient(api.create_app(engine, "tiny", api_key=KEY), headers={"Authorization": f"Bearer {KEY}"})


def test_a_body_past_the_limit_is_413_whether_declared_or_streamed(client, engine):
    big = json.dumps({"messages": [{"role": "user", "content": "x" * (api.MAX_BODY_BYTES + 10)}]}).encode()
    r = client.post("/v1/chat/completions", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "larger than" in r.json()["error"]["message"]

    def chunks():  # no Content-Length: the limit is found while reading
        for i in range(0, len(big), 1 << 20):
            yield big[i:i + (1 << 20)]

    r = client.post("/v1/completions", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert engine.seen == []
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 200  # and it still serves


@pytest.mark.parametrize("raw", [
    b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": Infinity}',
    b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"messages": "\xff\xfe"}',
    b'{"messages": [{"role": "user", "con',
])
def test_invalid_json_is_400_not_500(client, engine, raw):
    r = client.post("/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    assert engine.seen == []


@pytest.mark.parametrize("extra, param", [
    ({"seed": 10**30}, "seed"),                 # past what torch.manual_seed takes
    ({"seed": -(2**64)}, "seed"),
    ({"max_tokens": -5}, "max_tokens"),
    ({"top_k": 1.5}, "top_k"),
])
def test_numbers_out_of_range_are_400(client, engine, extra, param):
    r = client.post("/v1/chat/completions", json={**CHAT, **extra})
    assert r.status_code == 400 and r.json()["error"]["param"] == param
    assert engine.seen == []


def test_a_number_too_big_for_a_float_is_400(client, engine):
    raw = b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e400}'  # parses as infinity
    r = client.post("/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
    assert engine.seen == []


def test_seeds_in_torch_range_and_huge_max_tokens_are_served(client, engine):
    for seed in (0, 2**64 - 1, -(2**63)):
        assert client.post("/v1/chat/completions", json={**CHAT, "seed": seed}).status_code == 200
    r = client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 10**12})
    assert r.status_code == 200 and engine.seen[-1][1].max_tokens < engine.context_length


def _asgi_call(app, body: bytes, *, disconnect: bool) -> list[dict]:
    """One POST through the ASGI interface, the client hanging up right after sending the body."""
    inbox = [{"type": "http.request", "body": body, "more_body": False}]
    if disconnect:
        inbox.append({"type": "http.disconnect"})
    sent: list[dict] = []

    async def receive():
        if inbox:
            return inbox.pop(0)
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/chat/completions",
             "raw_path": b"/v1/chat/completions", "query_string": b"", "root_path": "",
             "headers": [(b"authorization", f"Bearer {KEY}".encode()), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 1234), "server": ("127.0.0.1", 80)}
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
    return sent


def test_a_client_that_leaves_before_its_whole_answer_stops_the_generation(engine):
    app = api.create_app(engine, "tiny", api_key=KEY)
    body = json.dumps(CHAT).encode()
    _asgi_call(app, body, disconnect=False)
    assert engine.cancelled == 0  # a client that stays gets the whole answer
    _asgi_call(app, body, disconnect=True)
    assert engine.cancelled == 1


class OneAtATimeEngine(ScriptedEngine):
    """Holds a lock from its first piece to its last, as the transformers engine does."""

    def __init__(self, pieces):
        super().__init__(pieces)
        self.lock = threading.Lock()

    def generate(self, ids, params, cancel, result):
        with self.lock:
            yield from super().generate(ids, params, cancel, result)


def test_more_clients_than_worker_threads_are_all_served():
    engine = OneAtATimeEngine(["a", "b", "c"])
    app = api.create_app(engine, "tiny", api_key=KEY)

    async def run():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                     headers={"Authorization": f"Bearer {KEY}"}) as http:
            calls = [http.post("/v1/chat/completions", json=CHAT) for _ in range(60)]  # the pool has 40
            return [r.status_code for r in await asyncio.wait_for(asyncio.gather(*calls), 30)]

    assert asyncio.run(run()) == [200] * 60
