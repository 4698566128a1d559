"""Endpoint URLs: a scheme the client cannot speak is a usage error, and a password in one is never shown."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.client.fake_openai import FakeOpenAI, Reply
from tests.client.test_client import MSGS, fast, free_port
from unfork.client import (
    APIError,
    ClientError,
    ClientSettings,
    MultiClient,
    OpenAIClient,
    make_client,
    redact_url,
    stream_chat_blocking,
)
from unfork.errors import UsageError


@pytest.mark.parametrize("url", ["ftp://x", "file:///etc/passwd", "ws://h:1/v1", "http://", "https:///v1",
                                 "localhost:notaport"])
def test_a_url_the_client_cannot_speak_is_a_usage_error(url):
    for build in (make_client, lambda u: OpenAIClient(ClientSettings(u)), lambda u: stream_chat_blocking(u, MSGS)):
        with pytest.raises(UsageError) as err:
            build(url)
        assert repr(url) in err.value.message or url in err.value.message
        assert "http" in err.value.hint


def test_a_bad_url_names_it_without_its_password():
    with pytest.raises(UsageError) as err:
        make_client("ftp://me:hunter2@host/")
    assert "ftp://me:***@host/" in err.value.message and "hunter2" not in str(err.value)


@pytest.mark.parametrize(("url", "shown"), [
    ("http://user:secret@host:8000/v1", "http://user:***@host:8000/v1"),
    ("https://:secret@host/", "https://:***@host/"),
    ("http://user@host/v1", "http://user@host/v1"),
    ("http://host:8000/v1?a=b@c", "http://host:8000/v1?a=b@c"),
    ("http://us%40er:p@ss@host/x", "http://us%40er:***@host/x"),
    ("localhost:8000", "localhost:8000"),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown


SECRET = "http://user:s3cret@127.0.0.1:{port}/v1"


def test_reprs_hide_the_password():
    url = SECRET.format(port=1)
    assert "s3cret" not in repr(OpenAIClient(url)) and "user:***@" in repr(OpenAIClient(url))
    multi = make_client([url, "http://127.0.0.1:2/v1"])
    assert isinstance(multi, MultiClient)
    assert "s3cret" not in repr(multi)
    assert all("s3cret" not in key for key in multi.endpoint_stats())


def test_an_unreachable_endpoint_error_hides_the_password(caplog):
    url = SECRET.format(port=free_port())
    caplog.set_level(logging.DEBUG, logger="unfork.client")
    with pytest.raises(ClientError) as err:
        asyncio.run(OpenAIClient(fast(url, max_retries=1), model="m").chat(MSGS))
    assert "user:***@127.0.0.1" in err.value.message
    assert "s3cret" not in str(err.value) and "s3cret" not in caplog.text
    with pytest.raises(ClientError) as err:
        "".join(stream_chat_blocking(fast(url, max_retries=0), MSGS, model="m"))
    assert "user:***@127.0.0.1" in err.value.message and "s3cret" not in str(err.value)


def test_an_error_status_hides_the_password():
    with FakeOpenAI() as server:
        url = server.url.replace("http://", "http://user:s3cret@")
        server.push(Reply(status=400, body={"error": {"message": "bad"}}))
        with pytest.raises(APIError) as err:
            asyncio.run(OpenAIClient(fast(url), model="m").chat(MSGS))
        assert "user:***@" in err.value.message
        assert "s3cret" not in str(err.value) and "s3cret" not in err.value.url
        server.push(Reply(status=400, body={"error": {"message": "bad"}}))
        with pytest.raises(APIError) as err:
            "".join(stream_chat_blocking(fast(url), MSGS, model="m"))
        assert "s3cret" not in str(err.value) and "s3cret" not in err.value.url
