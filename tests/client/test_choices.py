"""Streamed replies of several choices: each choice reported as it ends, the reply whole at the end."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.client.fake_openai import FakeOpenAI, Reply
from unfork.client import APIError, ClientSettings, MultiClient, OpenAIClient
from unfork.client.base import _Retryable
from unfork.client.choices import StreamedChoices, chat_choices

MSGS = [{"role": "user", "content": "Write."}]


def run(client, **params):
    ended: list[int] = []

    async def main():
        try:
            return await chat_choices(client, MSGS, on_finish=ended.append, **params)
        finally:
            await client.aclose()

    return asyncio.run(main()), ended


def settings(fake, **kw):
    return ClientSettings(fake.url, backoff_base=0.01, backoff_max=0.02, **kw)


def test_choices_are_reported_as_they_end_and_the_reply_is_whole():
    timings = {"prompt_n": 5, "cache_n": 2}
    with FakeOpenAI(default=Reply(choices=["a b c d", "e", "f g"], timings=timings), http11=True) as fake:
        res, ended = run(OpenAIClient(settings(fake), model="m"), n=3, temperature=1.0)
        body = fake.posts()[0]
    assert ended == [1, 2, 0]  # the shortest first
    assert res.choices == [("a b c d", "stop"), ("e", "stop"), ("f g", "stop")]
    assert res.text == "a b c d" and res.finish_reason == "stop"
    assert res.usage.completion_tokens == 4  # llama.cpp's usage: the first choice only
    assert res.raw["timings"] == timings and res.model == "fake-model"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True} and body["n"] == 3


def test_a_stream_that_breaks_off_is_retried_and_each_choice_is_reported_once():
    with FakeOpenAI([Reply(choices=["a b c", "d"], drop_after=4), Reply(choices=["x y z", "w"])]) as fake:
        res, ended = run(OpenAIClient(settings(fake), model="m"), n=2)
        assert len(fake.posts()) == 2
    assert res.texts == ["x y z", "w"]
    assert ended == [1, 0]  # choice 1 ended in the broken stream too, but is reported once


def test_an_error_event_in_the_stream_raises_the_servers_message():
    broken = Reply(choices=["a b", "c"], stream_error={"message": "context shift is disabled"})
    with FakeOpenAI(default=broken) as fake, pytest.raises(APIError, match="context shift is disabled"):
        run(OpenAIClient(settings(fake, max_retries=0), model="m"), n=2)


def test_a_multiclient_streams_from_one_of_its_endpoints():
    with FakeOpenAI(default=Reply(choices=["a", "b c"])) as one, FakeOpenAI(default=Reply(choices=["d", "e"])) as two:
        client = MultiClient([OpenAIClient(settings(one), model="m"), OpenAIClient(settings(two), model="m")])
        res, ended = run(client, n=2)
    assert res.texts in (["a", "b c"], ["d", "e"]) and sorted(ended) == [0, 1]


def test_a_server_that_answers_a_stream_with_a_whole_reply_is_read_as_one():
    whole = {"model": "m", "choices": [{"index": 1, "message": {"content": "two"}, "finish_reason": "length"},
                                       {"index": 0, "message": {"content": "one"}, "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
    reply = StreamedChoices("http://x/v1/chat/completions")
    for line in json.dumps(whole, indent=1).splitlines():
        assert reply.feed(line) == []
    assert reply.close() == [0, 1]
    res = reply.result()
    assert res.choices == [("one", "stop"), ("two", "length")] and res.usage.prompt_tokens == 3


def test_a_stream_that_ends_before_every_choice_did_is_retryable():
    reply = StreamedChoices("http://x/v1/chat/completions")
    event = {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"},
                         {"index": 1, "delta": {"content": "there"}, "finish_reason": None}]}
    assert reply.feed("data: " + json.dumps(event)) == []
    with pytest.raises(_Retryable):
        reply.close()  # the event is complete at the end of the stream, but choice 1 never ended
    assert reply.finish == {0: "stop"}
