"""Chat with the real Qwen2.5-Coder-0.5B through llama-server (slow; skipped when either is missing)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import real_llama_server, real_model_file
from unfork.chat.engine import ChatEngine
from unfork.chat.session import Conversation
from unfork.client import ClientSettings, ContextOverflowError, OpenAIClient, stream_chat_blocking

pytestmark = [pytest.mark.slow, pytest.mark.llama]

REPO = Path(__file__).resolve().parents[2]
UNFORK = str(Path(sys.executable).with_name("unfork"))


@pytest.fixture(scope="module")
def gguf() -> Path:
    explicit = os.environ.get("UNFORK_TEST_GGUF")
    return Path(explicit) if explicit else real_model_file("qwen2.5-coder-0.5b-instruct")


@pytest.fixture(scope="module")
def llama(gguf):
    real_llama_server()
    from unfork.serve.launch import running_server

    with running_server(str(gguf), backend="llama-cpp", parallel=1, ctx_size=1024) as ep:
        yield ep


def test_quick_question_starts_and_stops_a_real_server(gguf, llama):
    r = subprocess.run([UNFORK, "model", "chat", "-m", str(gguf), "-qq", "What is 2+2? Reply with the number only.",
                        "--temperature", "0", "--max-tokens", "8"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "4" in r.stdout


def test_conversation_window_and_overflow_with_the_real_server(llama):
    async def go():
        async with OpenAIClient(ClientSettings(llama.base_url, api_key=llama.api_key)) as client:
            window = await client.context_window(llama.model)
            engine = ChatEngine(client, Conversation(system="You are a helpful assistant. Answer briefly."),
                                model=llama.model, temperature=0.0, max_tokens=24)
            await engine.learn_window(4096)
            await engine.reply("My name is Ada. Please remember it.")
            answer = await engine.reply("What is my name? Reply with the name only.")
            with pytest.raises(ContextOverflowError):
                await client.chat([{"role": "user", "content": "word " * 3000}], model=llama.model, max_tokens=8)
            return window, engine.window, answer.text

    window, engine_window, text = asyncio.run(go())
    assert window == 1024  # llama-server's /props: the slot's context
    assert engine_window == 1024
    assert "Ada" in text


def test_blocking_stream_with_the_real_server(llama):
    stream = stream_chat_blocking(ClientSettings(llama.base_url, api_key=llama.api_key),
                                  [{"role": "user", "content": "Say hello."}], model=llama.model,
                                  temperature=0.0, max_tokens=8)
    pieces = list(stream)
    assert len(pieces) > 1 and "".join(pieces).strip()
    assert stream.finish_reason in ("stop", "length")


def test_interactive_chat_with_a_real_model_in_a_terminal(gguf, llama):
    """The whole interactive path: unfork starts llama-server itself, chats, and stops it on /q."""
    pexpect = pytest.importorskip("pexpect")
    env = {**os.environ, "TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1", "NO_COLOR": "1"}
    child = pexpect.spawn(UNFORK, ["model", "chat", "-m", str(gguf), "--temperature", "0", "--max-tokens", "16",
                                   "--no-markdown"], env=env, encoding="utf-8", timeout=240, dimensions=(40, 120))
    child.expect("Chatting with")
    child.expect(">>>")
    child.sendline("What is 2+2? Reply with the number only.")
    child.expect("4")
    child.expect(">>>")
    child.sendline("/q")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
