"""``unfork model chat`` through the real console script against a real local fake server."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.client.fake_openai import FakeOpenAI, Reply

UNFORK = str(Path(sys.executable).with_name("unfork"))


@pytest.fixture
def server():
    with FakeOpenAI(default=Reply(text="The answer is **42**.")) as srv:
        yield srv


def unfork(*args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([UNFORK, *args], input=input, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "NO_COLOR": "1"})


def test_quick_question_prints_only_the_answer(server):
    r = unfork("model", "chat", "--endpoint-url", server.url, "-qq", "What", "is", "the", "answer?",
               "--system", "You are terse.", "--temperature", "0.2", "--max-tokens", "7")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "The answer is **42**.\n"
    assert r.stderr == ""
    body = server.posts()[-1]
    assert body["messages"] == [{"role": "system", "content": "You are terse."},
                                {"role": "user", "content": "What is the answer?"}]
    assert (body["temperature"], body["max_tokens"], body["stream"], body["model"]) == (0.2, 7, True, "fake-model")


def test_quick_question_uses_config_file_and_model_flag(server, unfork_home):
    (unfork_home / "config").mkdir(parents=True, exist_ok=True)
    (unfork_home / "config" / "config.yaml").write_text("chat:\n  system: From the file.\n  max_tokens: 33\n")
    r = unfork("model", "chat", "--endpoint-url", server.url, "-m", "granite-7b", "-qq", "hi")
    assert r.returncode == 0, r.stderr
    body = server.posts()[-1]
    assert body["messages"][0] == {"role": "system", "content": "From the file."}
    assert (body["max_tokens"], body["model"]) == (33, "granite-7b")
    assert [m for m, _, _ in server.requests] == ["POST"]  # a given model name needs no /v1/models lookup


def test_quick_question_from_stdin(server):
    r = unfork("model", "chat", "--endpoint-url", server.url, "-qq", input="a question on stdin\n")
    assert r.returncode == 0, r.stderr
    assert server.posts()[-1]["messages"][-1]["content"] == "a question on stdin"


def test_unreachable_endpoint_is_a_clear_error():
    with FakeOpenAI() as srv:
        url = srv.url
    r = unfork("model", "chat", "--endpoint-url", url, "-qq", "hi")
    assert r.returncode == 1
    assert r.stdout == ""
    assert f"cannot reach {url}" in r.stderr and "Traceback" not in r.stderr
    assert "hint:" in r.stderr


def test_bad_api_key_is_a_clear_error(server):
    server.push(Reply(status=401, body={"error": {"message": "Invalid API Key", "type": "authentication_error"}}))
    r = unfork("model", "chat", "--endpoint-url", server.url, "--api-key", "wrong", "-m", "m", "-qq", "hi")
    assert r.returncode == 1
    assert "Invalid API Key" in r.stderr and "--api-key" in r.stderr and "Traceback" not in r.stderr


def test_piped_chat_with_a_loaded_ilab_session(server, tmp_path):
    session = tmp_path / "ilab-session.json"
    session.write_text(json.dumps([{"role": "system", "content": "ilab system"},
                                   {"role": "user", "content": "earlier question"},
                                   {"role": "assistant", "content": "earlier answer"}]))
    r = unfork("model", "chat", "--endpoint-url", server.url, "-s", str(session), input="next question\n/s\n/q\n")
    assert r.returncode == 0, r.stderr
    assert "The answer is **42**." in r.stdout
    assert [m["content"] for m in server.posts()[-1]["messages"]] == [
        "ilab system", "earlier question", "earlier answer", "next question"]
    assert "Saved 4 messages to" in r.stdout


def test_help_and_quick_path_import_no_ui_libraries(server):
    code = """
import sys, atexit
def report():
    sys.stderr.write("LOADED:" + ",".join(m for m in ("httpx", "rich", "prompt_toolkit", "yaml")
                                          if m in sys.modules) + "\\n")
atexit.register(report)
sys.argv = ["unfork"] + sys.argv[1:]
from unfork.cli.main import main
main()
"""
    r = subprocess.run([sys.executable, "-c", code, "model", "chat", "--help"], capture_output=True, text=True)
    assert "--quick-question" in r.stdout
    assert "LOADED:\n" in r.stderr  # --help: no client, no UI
    r = subprocess.run([sys.executable, "-c", code, "model", "chat", "--endpoint-url", server.url, "-qq", "hi"],
                       capture_output=True, text=True)
    assert r.stdout == "The answer is **42**.\n"
    assert "LOADED:\n" in r.stderr  # -qq: the standard-library client only


def test_without_endpoint_a_temporary_server_is_started_and_stopped(server, monkeypatch):
    import types

    calls = []

    @contextlib.contextmanager
    def fake_running_server(model=None, **kwargs):
        calls.append(("start", model, kwargs.get("parallel")))
        try:
            yield types.SimpleNamespace(base_url=server.url, api_key="k3y", model="served-name")
        finally:
            calls.append(("stop",))

    import unfork.serve.launch as launch

    monkeypatch.setattr(launch, "running_server", fake_running_server)
    from unfork.cli.main import cli

    result = CliRunner().invoke(cli, ["model", "chat", "-m", "my-model", "-qq", "hello"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "The answer is **42**.\n"
    assert calls == [("start", "my-model", 1), ("stop",)]
    assert server.posts()[-1]["model"] == "served-name"

    calls.clear()
    monkeypatch.setenv("UNFORK_MODELS_CHAT", "configured-chat-model")
    result = CliRunner().invoke(cli, ["model", "chat", "-qq", "hello"])
    assert result.exit_code == 0, result.output
    assert calls[0][1] == "configured-chat-model"


def test_interactive_chat_with_a_dead_endpoint_fails_fast_and_clearly():
    with FakeOpenAI() as srv:
        url = srv.url
    r = unfork("model", "chat", "--endpoint-url", url, input="hello\n", timeout=30)
    assert r.returncode == 1
    assert f"cannot reach {url}" in r.stderr and "Traceback" not in r.stderr
