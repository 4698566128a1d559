"""Real servers under a little load and abuse: they answer each bad request with the right status and keep serving.

A reduced bench/bench_serve_abuse.py: 8 concurrent clients, then one of each abuse case, against unfork's
transformers app on the real SmolLM2 folder and against llama-server on its GGUF.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.conftest import REAL_MODELS_DIR, missing, real_model_file
from unfork.config import Config
from unfork.serve import running_server

pytestmark = pytest.mark.slow
httpx = pytest.importorskip("httpx")

HELLO = [{"role": "user", "content": "Say hello."}]
CTX = 1024
# llama-server answers unparsable JSON with 500 (its own behaviour; unfork passes requests straight to it).
BAD_JSON_STATUS = {"transformers": {400}, "llama-cpp": {400, 500}}


def abuse_cases(backend: str) -> list[tuple[str, dict | None, bytes | None, set[int]]]:
    """(name, JSON body or None, raw body or None, statuses allowed)."""
    huge = json.dumps({"messages": [{"role": "user", "content": "hello " * 2_000_000}]}).encode()
    return [
        ("12 MB body", None, huge, {413} if backend == "transformers" else {400, 413}),
        ("truncated JSON", None, b'{"messages": [{"role": "user", "con', BAD_JSON_STATUS[backend]),
        ("messages not a list", {"messages": "hello"}, None, {400}),
        ("temperature is text", {"messages": HELLO, "temperature": "hot"}, None, {400}),
        ("negative max_tokens", {"messages": HELLO, "max_tokens": -5}, None, {400}),
        ("huge max_tokens", {"messages": HELLO, "max_tokens": 10**12, "temperature": 0}, None, {200, 400}),
        ("past the context", {"messages": [{"role": "user", "content": "hello " * (2 * CTX)}]}, None, {400}),
    ]


async def chat(http, key: str | None, body: dict | None = None, raw: bytes | None = None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if raw is not None:
        r = await http.post("/chat/completions", content=raw,
                            headers={**headers, "Content-Type": "application/json"})
    else:
        r = await http.post("/chat/completions", json=body or {"messages": HELLO, "max_tokens": 2},
                            headers=headers)
    return r.status_code


async def hang_up_after_first_chunk(http, key: str) -> int:
    body = {"messages": [{"role": "user", "content": "Tell a long story."}], "max_tokens": 500, "stream": True}
    async with http.stream("POST", "/chat/completions", json=body,
                           headers={"Authorization": f"Bearer {key}"}) as r:
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                break
        return r.status_code


async def abuse(ep, backend: str) -> dict[str, int]:
    seen: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=ep.base_url, timeout=50) as http:
        loads = await asyncio.gather(*(chat(http, ep.api_key) for _ in range(8)))
        assert loads == [200] * 8
        for name, body, raw, allowed in abuse_cases(backend):
            # an ordinary client asks at the same time, and must be served
            seen[name], canary = await asyncio.gather(chat(http, ep.api_key, body, raw), chat(http, ep.api_key))
            assert seen[name] in allowed and canary == 200, (name, seen[name], canary)
        assert await asyncio.gather(*(hang_up_after_first_chunk(http, ep.api_key) for _ in range(2))) == [200] * 2
        assert await chat(http, None) == 401
        assert await chat(http, "sk-wrong") == 401
        assert (await http.get("/models", headers={"Authorization": "Bearer sk-wrong"})).status_code == 401
        # still answering, and the abandoned streams left the model free
        assert await asyncio.wait_for(chat(http, ep.api_key), 30) == 200
    return seen


def test_transformers_app_survives_abuse():
    pytest.importorskip("transformers")
    folder = REAL_MODELS_DIR / "smollm2-135m-instruct-hf"
    if not (folder / "config.json").is_file():
        missing("the SmolLM2 Hugging Face folder is not there: run "
                "'.venv/bin/unfork model convert smollm2-135m-instruct'")
    with running_server(str(folder), backend="transformers", ctx_size=CTX, cfg=Config(), timeout=120) as ep:
        seen = asyncio.run(abuse(ep, "transformers"))
    assert seen["12 MB body"] == 413 and seen["truncated JSON"] == 400


@pytest.mark.llama
def test_llama_server_survives_abuse(llama_server_bin):
    gguf = real_model_file("smollm2-135m-instruct")
    with running_server(str(gguf), backend="llama-cpp", parallel=4, ctx_size=CTX, cfg=Config(),
                        timeout=120) as ep:
        asyncio.run(abuse(ep, "llama-cpp"))
