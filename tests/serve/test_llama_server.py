"""The real llama-server on the real 0.5B Qwen GGUF, started through running_server and the CLI."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from unfork.config import Config
from unfork.serve import running_server
from unfork.serve.ports import free_port
from unfork.serve.process import ServerStartError

pytestmark = [pytest.mark.slow, pytest.mark.llama]
httpx = pytest.importorskip("httpx")

FOREIGN_TAGS = ("<|user|>", "<|assistant|>", "<|system|>", "<|im_start|>", "<|im_end|>", "<|endoftext|>")


@pytest.fixture(scope="module")
def endpoint(llama_server_bin, real_gguf):
    with running_server(str(real_gguf), backend="llama-cpp", parallel=4, ctx_size=2048, cfg=Config()) as ep:
        yield ep


def auth(ep) -> dict:
    return {"Authorization": f"Bearer {ep.api_key}"}


def chat(ep, content: str, **extra) -> dict:
    r = httpx.post(ep.base_url + "/chat/completions", headers=auth(ep), timeout=300,
                   json={"model": ep.model, "messages": [{"role": "user", "content": content}], **extra})
    r.raise_for_status()
    return r.json()


def test_chat_answer_is_sensible_and_clean(endpoint):
    body = chat(endpoint, "What is the capital of France? Answer with one word.", temperature=0, max_tokens=16)
    text = body["choices"][0]["message"]["content"]
    assert "paris" in text.lower()
    assert not any(tag in text for tag in FOREIGN_TAGS), text
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] <= 16


def test_model_id_and_auth(endpoint):
    assert httpx.get(endpoint.base_url.removesuffix("/v1") + "/health", timeout=10).status_code == 200
    assert httpx.get(endpoint.base_url + "/models", timeout=10).status_code == 401
    r = httpx.post(endpoint.base_url + "/chat/completions", timeout=10,
                   headers={"Authorization": "Bearer wrong"}, json={"messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 401
    models = httpx.get(endpoint.base_url + "/models", headers=auth(endpoint), timeout=10).json()
    assert endpoint.model in [m["id"] for m in models["data"]]


def test_streaming_chat(endpoint):
    body = {"model": endpoint.model, "stream": True, "temperature": 0, "max_tokens": 24,
            "messages": [{"role": "user", "content": "Count from 1 to 5, separated by commas."}]}
    with httpx.stream("POST", endpoint.base_url + "/chat/completions", headers=auth(endpoint), json=body,
                      timeout=300) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert "1, 2, 3" in text.replace(",2", ", 2")
    assert not any(tag in text for tag in FOREIGN_TAGS)
    assert len(chunks) > 3, "the answer must arrive in pieces"


def test_completions(endpoint):
    r = httpx.post(endpoint.base_url + "/completions", headers=auth(endpoint), timeout=300,
                   json={"prompt": "def add(a, b):\n    return", "max_tokens": 8, "temperature": 0})
    assert "a + b" in r.json()["choices"][0]["text"]


def test_concurrent_requests_decode_together(endpoint):
    async def one(client, i):
        body = {"model": endpoint.model, "stream": True, "temperature": 0, "max_tokens": 24,
                "messages": [{"role": "user", "content": f"Write a short poem about the number {i}."}]}
        first = last = None
        async with client.stream("POST", endpoint.base_url + "/chat/completions", json=body) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: {") and '"content":"' in line:
                    last = time.monotonic()
                    first = first or last
        return first, last

    async def main():
        async with httpx.AsyncClient(headers=auth(endpoint), timeout=600) as client:
            return await asyncio.gather(*[one(client, i) for i in range(4)])

    spans = asyncio.run(main())
    assert all(first and last for first, last in spans)
    # Every stream got its first token before any stream finished: four slots decoding at once.
    assert max(f for f, _ in spans) < min(la for _, la in spans)


@pytest.fixture
def corrupt_gguf(real_gguf, tmp_path) -> Path:
    path = tmp_path / "broken.gguf"
    with real_gguf.open("rb") as src:
        path.write_bytes(src.read(2_000_000))  # header and metadata, tensors cut off
    return path


def test_corrupt_model_is_an_error_with_the_engine_reason(llama_server_bin, corrupt_gguf):
    with pytest.raises(ServerStartError) as info, running_server(str(corrupt_gguf), backend="llama-cpp",
                                                                 cfg=Config()):
        pytest.fail("a truncated model must not serve")
    first = info.value.message.splitlines()[0]
    assert "llama-server exited with code" in first
    assert any(w in first.lower() for w in ("error", "failed")), first
    assert "llama_model_load" in info.value.log_tail or "gguf" in info.value.log_tail.lower()


def test_cli_corrupt_model_exits_nonzero(llama_server_bin, corrupt_gguf):
    result = subprocess.run([sys.executable, "-m", "unfork", "model", "serve", "--model", str(corrupt_gguf),
                             "--port", str(free_port())], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "llama-server exited with code" in result.stderr


PARENT = textwrap.dedent("""
    import sys, time
    from unfork.config import Config
    from unfork.serve import running_server
    with running_server(sys.argv[1], backend="llama-cpp", cfg=Config()) as ep:
        print(ep.base_url, flush=True)
        time.sleep(600)
""")


def llama_pids(port: int) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                state = (proc / "stat").read_text().split(")")[-1].split()[0]
            except OSError:
                continue
            if state != "Z" and any(a.endswith(b"llama-server") for a in argv[:1]) and str(port).encode() in argv:
                pids.append(int(proc.name))
    return pids


def test_killed_parent_leaves_no_llama_server(llama_server_bin, real_gguf):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(real_gguf)], stdout=subprocess.PIPE, text=True)
    try:
        url = parent.stdout.readline().strip()
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        assert llama_pids(port), "llama-server should be running"
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 15
        while llama_pids(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not llama_pids(port), "llama-server outlived a SIGKILLed parent"
    finally:
        parent.kill()
        parent.wait()
