"""The interactive chat in a real pseudo-terminal (pexpect) against a real local fake server."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from tests.client.fake_openai import FakeOpenAI, Reply

pexpect = pytest.importorskip("pexpect")

UNFORK = str(Path(sys.executable).with_name("unfork"))
PROMPT = ">>>"  # prompt_toolkit draws the trailing space as a cursor move


def spawn(url: str, *args: str):
    env = {**os.environ, "TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1", "NO_COLOR": "1"}
    child = pexpect.spawn(UNFORK, ["model", "chat", "--endpoint-url", url, *args], env=env,
                          encoding="utf-8", timeout=20, dimensions=(40, 120))
    return child


def wait_posts(server, n, timeout=10):
    deadline = time.monotonic() + timeout
    while len(server.posts()) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return server.posts()


def test_interactive_session(unfork_home):
    with FakeOpenAI() as server:
        server.push(Reply(text="Paris is the capital of France."))
        child = spawn(server.url, "--no-markdown")
        child.expect("Chatting with fake-model")
        child.expect(PROMPT)

        child.sendline("What is the capital of France?")
        child.expect("Paris is the capital of France.")
        child.expect(PROMPT)

        child.sendline("/h")
        child.expect("Commands")
        child.expect("Esc then Enter")
        child.expect(PROMPT)

        child.sendline("/s mysession")
        child.expect("Saved 2 messages to")
        child.expect(PROMPT)
        saved = unfork_home / "data" / "chatlogs" / "mysession.json"
        assert [m["content"] for m in json.loads(saved.read_text())][1:] == [
            "What is the capital of France?", "Paris is the capital of France."]

        child.sendline("/clear")
        child.expect("Context cleared.")
        child.expect(PROMPT)

        # Esc+Enter and a trailing backslash both make new lines instead of sending.
        child.send("line one")
        child.send("\x1b\r")
        child.send("line two\\")
        child.send("\r")
        child.send("line three\r")
        child.expect("ok")
        child.expect(PROMPT)
        last = wait_posts(server, 2)[-1]["messages"]
        assert last == [{"role": "system", "content": "You are a helpful assistant."},
                        {"role": "user", "content": "line one\nline two\nline three"}]

        # ilab's /m: in multi-line input Enter adds a line and Esc then Enter sends.
        child.sendline("/m")
        child.expect("Multi-line input for the next message")
        child.expect(PROMPT)
        child.send("first\rsecond")
        child.send("\x1b\r")
        child.expect("ok")
        child.expect(PROMPT)
        assert wait_posts(server, 3)[-1]["messages"][-1]["content"] == "first\nsecond"

        # Ctrl-C stops a slow answer and the chat goes on.
        server.push(Reply(text="one two three four five six seven eight nine ten", chunk_delay=0.4),
                    Reply(text="still alive"))
        child.sendline("tell me a long story")
        child.expect("two")
        child.sendintr()
        child.expect(r"\[interrupted\]")
        child.expect(PROMPT)
        child.sendline("are you there?")
        child.expect("still alive")
        child.expect(PROMPT)

        child.sendline("/q")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
        assert "ten" not in child.before
        history = (unfork_home / "data" / "chat_history").read_text()
        assert "What is the capital of France?" in history


def test_markdown_rendering_and_ctrl_d(unfork_home):
    with FakeOpenAI(default=Reply(text="Some **bold words** here.\n\n- item A\n- item B\n")) as server:
        child = spawn(server.url)  # Markdown is on by default
        child.expect(PROMPT)
        child.sendline("show markdown")
        child.expect("item B")
        rendered = child.before
        child.expect(PROMPT)
        # The final rendering: bold text, no asterisks (a partial one may flash by while streaming).
        final = rendered.rsplit("Some ", 1)[1]
        assert final.startswith("\x1b[1mbold words\x1b[0m here.")

        child.sendline("/markdown")
        child.expect("Markdown off.")
        child.expect(PROMPT)
        child.sendline("again")
        child.expect(r"\*\*bold words\*\*")
        child.expect(PROMPT)

        child.sendeof()  # Ctrl-D quits, and the conversation is kept in the chat logs
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
        logs = list((unfork_home / "data" / "chatlogs").glob("chat_*.json"))
        assert len(logs) == 1 and len(json.loads(logs[0].read_text())) == 5
