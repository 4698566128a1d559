"""Errors that every later request would hit too stop generation instead of becoming rejected rows."""

from __future__ import annotations

import pytest

from tests.client.fake_openai import FakeOpenAI, Reply
from tests.sdg.test_engine import leaf, run  # noqa: F401 - the fixture is used by name
from unfork.client import (
    APIError,
    AuthenticationError,
    ClientError,
    ClientSettings,
    ContextOverflowError,
    EndpointUnreachableError,
    FatalClientError,
    NotFoundError,
    RequestTimeoutError,
    StreamInterruptedError,
)


def test_the_fatal_errors_share_one_base_class():
    assert all(issubclass(cls, FatalClientError) and issubclass(cls, ClientError)
               for cls in (EndpointUnreachableError, AuthenticationError, NotFoundError))
    assert not any(issubclass(cls, FatalClientError)
                   for cls in (APIError, ContextOverflowError, RequestTimeoutError, StreamInterruptedError))
    err = NotFoundError("gone", status_code=404, server_message="no such model")
    assert (err.status_code, err.server_message, err.message) == (404, "no such model", "gone")


@pytest.mark.parametrize(("status", "cls"), [(401, AuthenticationError), (403, AuthenticationError),
                                             (404, NotFoundError)])
def test_a_fatal_status_stops_generation(leaf, tmp_path, status, cls):  # noqa: F811
    with FakeOpenAI(default=Reply(status=status)) as fake, pytest.raises(cls):
        run(leaf, fake, cache=tmp_path / "cache")


def test_an_unreachable_teacher_stops_generation(leaf, tmp_path):  # noqa: F811
    with FakeOpenAI(default=Reply(text="unused")) as fake:
        url = fake.url
    settings = ClientSettings(url, max_retries=0, max_concurrency=2)
    with FakeOpenAI(default=Reply(text="unused")) as other, pytest.raises(EndpointUnreachableError):
        run(leaf, other, cache=tmp_path / "cache", settings=settings)


def test_a_non_fatal_client_error_becomes_a_rejection(leaf, tmp_path):  # noqa: F811
    settings = lambda url: ClientSettings(url, max_retries=0, max_concurrency=2)  # noqa: E731
    with FakeOpenAI(default=Reply(status=400)) as fake:
        _, (res,) = run(leaf, fake, cache=tmp_path / "cache", settings=settings(fake.url))
    assert res.accepted == [] and res.rejected
    assert {r["reason"].split(":")[0] for r in res.rejected} == {"teacher error"}
