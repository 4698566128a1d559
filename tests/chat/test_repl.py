"""The REPL's logic with a plain UI against a real local server that streams canned answers."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import threading
import time

import pytest

from tests.client.fake_openai import FakeOpenAI, Reply
from unfork.chat.engine import ChatEngine
from unfork.chat.repl import PlainUI, Repl
from unfork.chat.session import Conversation, estimate_messages
from unfork.client import ClientSettings, OpenAIClient


@pytest.fixture
def server():
    with FakeOpenAI() as srv:
        yield srv


def make_repl(server, lines, tmp_path, *, window=None, max_tokens=64, system="Be brief."):
    out = io.StringIO()
    client = OpenAIClient(ClientSettings(server.url, backoff_base=0.01, max_retries=1))
    engine = ChatEngine(client, Conversation(system=system), temperature=0.0, max_tokens=max_tokens,
                        window=window)
    ui = PlainUI(io.StringIO("".join(line + "\n" for line in lines)), out)
    return Repl(engine, ui, logs_dir=tmp_path / "logs", markdown=False), out


def run(repl, first=None):
    asyncio.run(repl.run(first))


def sent(server):
    """The messages of each chat request the server received."""
    return [b["messages"] for b in server.posts()]


def test_question_is_streamed_and_remembered(server, tmp_path):
    server.push(Reply(text="Paris."), Reply(text="About 2 million."))
    repl, out = make_repl(server, ["What is the capital of France?", "How many people live there?"], tmp_path)
    run(repl)
    assert out.getvalue() == "Paris.\nAbout 2 million.\n"
    second = sent(server)[1]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert second[2]["content"] == "Paris."
    assert server.posts()[0]["stream"] is True and server.posts()[0]["max_tokens"] == 64


def test_clear_context(server, tmp_path):
    repl, out = make_repl(server, ["first", "/clear", "second"], tmp_path)
    run(repl)
    assert "Context cleared." in out.getvalue()
    assert sent(server)[1] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "second"}]


def test_help_markdown_toggle_unknown(server, tmp_path):
    repl, out = make_repl(server, ["/h", "/markdown", "/markdown", "/zz"], tmp_path)
    repl.markdown = True
    run(repl)
    text = out.getvalue()
    assert "/q" in text and "/s [file]" in text and "Esc then Enter" in text
    assert "Markdown off." in text and "Markdown on." in text
    assert "Unknown command /zz" in text
    assert server.posts() == []


def test_ilab_context_command_changes_the_system_prompt(server, tmp_path):
    repl, out = make_repl(server, ["first", "/c", "/c cli_helper", "list files", "/c default", "again"], tmp_path)
    run(repl)
    assert "/c takes a context: default, cli_helper" in out.getvalue()
    cli_helper, default = sent(server)[1], sent(server)[2]
    assert cli_helper[0]["content"].startswith("You are an expert for command line interface")
    assert [m["content"] for m in cli_helper[1:]] == ["list files"]
    assert default == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "again"}]


def test_ilab_multiline_for_the_next_message_or_for_good(server, tmp_path):
    lines = ["/m", "line one", "line two", "", "single", "/M", "a", "b", "", "c", ""]
    repl, out = make_repl(server, lines, tmp_path)
    run(repl)
    asked = [msgs[-1]["content"] for msgs in sent(server)]
    assert asked == ["line one\nline two", "single", "a\nb", "c"]
    assert "Multi-line input on" in out.getvalue()


def test_ilab_amend_model_and_new_session_from_loaded(server, tmp_path):
    server.push(Reply(text="one"))
    repl, out = make_repl(server, ["q1", "/s base", "/clear", "/L base", "q2", "/n", "q3", "/N", "q4",
                                   "/a other-model", "q5", "/a"], tmp_path)
    run(repl)
    contents = [[m["content"] for m in msgs] for msgs in sent(server)]
    assert contents[1] == ["Be brief.", "q1", "one", "q2"]
    assert contents[2] == ["Be brief.", "q1", "one", "q3"]  # /n starts from what /L loaded
    assert contents[3] == ["Be brief.", "q4"]  # /N ignores it
    assert [b["model"] for b in server.posts()][-1] == "other-model"
    assert contents[4] == ["Be brief.", "q5"]
    assert "/a needs a model name; now: other-model" in out.getvalue()


def test_ilab_display_previous_answer(server, tmp_path):
    server.push(Reply(text="first"), Reply(text="second"))
    repl, out = make_repl(server, ["a", "b", "/d 2", "/md", "/d x"], tmp_path)
    run(repl)
    assert out.getvalue().startswith("first\nsecond\nfirst\nsecond\n")
    assert "take a number" in out.getvalue()


def test_quit_stops_reading(server, tmp_path):
    repl, out = make_repl(server, ["/q", "never asked"], tmp_path)
    run(repl)
    assert server.posts() == []


def test_save_and_load(server, tmp_path):
    server.push(Reply(text="one"), Reply(text="two"))
    repl, out = make_repl(server, ["q1", "/s mine", "/clear", "/l mine", "q2"], tmp_path)
    run(repl)
    saved = tmp_path / "logs" / "mine.json"
    assert json.loads(saved.read_text())[:3] == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "one"}]
    assert f"Saved 2 messages to {saved}" in out.getvalue()
    assert f"Loaded 2 messages from {saved}" in out.getvalue()
    assert [m["content"] for m in sent(server)[1]] == ["Be brief.", "q1", "one", "q2"]
    # Exiting saves the conversation where it was loaded from, now with the new exchange.
    assert len(json.loads(saved.read_text())) == 5


def test_load_newest_and_missing(server, tmp_path):
    repl, out = make_repl(server, ["/l", "/l nothing-here"], tmp_path)
    run(repl)
    assert "no saved sessions" in out.getvalue()
    assert "no saved session at" in out.getvalue()


def test_new_session_saves_the_old_one(server, tmp_path):
    repl, out = make_repl(server, ["hello", "/n", "again"], tmp_path)
    run(repl)
    logs = sorted((tmp_path / "logs").glob("chat_*.json"))
    assert logs, out.getvalue()
    first = json.loads(logs[0].read_text())
    assert [m["content"] for m in first] == ["Be brief.", "hello", "ok"]
    assert "New session. The last one is saved in" in out.getvalue()
    assert [m["content"] for m in sent(server)[1]] == ["Be brief.", "again"]


def test_previous_answer(server, tmp_path):
    server.push(Reply(text="**bold** one"), Reply(text="two"))
    repl, out = make_repl(server, ["a", "b", "/p 2", "/p 9", "/p x"], tmp_path)
    run(repl)
    assert out.getvalue().startswith("**bold** one\ntwo\n**bold** one\n")
    assert "There are 2 answers" in out.getvalue()


def test_trailing_backslash_continues_the_message(server, tmp_path):
    repl, out = make_repl(server, ["line one\\", "line two"], tmp_path)
    run(repl)
    assert sent(server)[0][-1] == {"role": "user", "content": "line one\nline two"}


def test_context_is_trimmed_to_the_window(server, tmp_path):
    server.context_length = 400  # the window comes from /v1/models
    questions = [f"question {i}: " + "words " * 59 + "end" for i in range(6)]
    server.default = Reply(text="answer " * 40)
    repl, out = make_repl(server, questions, tmp_path, max_tokens=100)

    async def go():
        await repl.engine.learn_window(4096)
        await repl.run()

    asyncio.run(go())
    assert repl.engine.window == 400
    budget = 400 - 100 - 16
    for msgs in sent(server):
        assert estimate_messages(msgs) <= budget
        assert msgs[0]["role"] == "system" and msgs[-1]["role"] == "user"
    assert len(sent(server)[-1]) < 2 * len(questions)  # older turns were dropped...
    assert sent(server)[-1][-1]["content"] == questions[-1]  # ...never the new question
    assert "no longer in context" in out.getvalue()
    assert len(repl.conversation.messages()) == 1 + 2 * len(questions)  # the transcript keeps everything


def test_context_overflow_from_the_server_trims_and_retries(server, tmp_path):
    limit = 700  # characters the fake "model" accepts

    def judge(body):
        size = sum(len(m["content"]) for m in body["messages"])
        if size > limit:
            return Reply(status=400, body={"error": {
                "code": 400, "type": "exceed_context_size_error",
                "message": "the request exceeds the available context size, try increasing it"}})
        return Reply(text="fine")

    server.on_chat = judge
    questions = ["x" * 200 for _ in range(5)]
    repl, out = make_repl(server, questions, tmp_path, window=100_000)  # a window far too optimistic
    run(repl)
    assert out.getvalue().count("fine") == 5
    statuses = [sum(len(m["content"]) for m in msgs) <= limit for msgs in sent(server)]
    assert statuses.count(True) == 5 and False in statuses  # it overflowed, trimmed, and got through
    assert repl.engine.window < 100_000


def test_server_error_keeps_the_conversation_valid(server, tmp_path):
    server.push(Reply(status=400, body={"error": {"message": "bad temperature"}}), Reply(text="ok now"))
    repl, out = make_repl(server, ["first", "second"], tmp_path)
    run(repl)
    assert out.getvalue().startswith("Error: ")  # no stray blank line for an answer that never came
    assert "bad temperature" in out.getvalue()
    assert [m["content"] for m in sent(server)[1]] == ["Be brief.", "second"]  # the failed question is gone
    assert [m["role"] for m in repl.conversation.turns] == ["user", "assistant"]


def test_ctrl_c_stops_the_answer_but_not_the_chat(server, tmp_path):
    server.push(Reply(text="one two three four five six seven eight nine ten", chunk_delay=0.3),
                Reply(text="still here"))
    repl, out = make_repl(server, ["long story", "are you there?"], tmp_path)

    def interrupt():
        deadline = time.monotonic() + 10
        while "two" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    run(repl)
    text = out.getvalue()
    assert "[interrupted]" in text
    assert "ten" not in text
    assert text.rstrip().endswith("still here")
    first_answer = repl.conversation.turns[1]
    assert first_answer["role"] == "assistant" and first_answer["content"].startswith("one two")


def test_first_question_from_the_command_line(server, tmp_path):
    repl, out = make_repl(server, [], tmp_path)
    run(repl, first="from argv")
    assert sent(server)[0][-1]["content"] == "from argv"
    # EOF right after: the conversation was saved to the chat logs.
    assert list((tmp_path / "logs").glob("chat_*.json"))
