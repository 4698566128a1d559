"""The pieces of the OpenAI-compatible layer, each called alone (no HTTP client)."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

pytest.importorskip("starlette")

from unfork.serve import openai_api as api  # noqa: E402


class PiecesEngine:
    context_length = 50

    def __init__(self, pieces: list[str], fail_after: int | None = None):
        self.pieces, self.fail_after = pieces, fail_after
        self.cancelled = False

    def encode_chat(self, messages, tools=None):
        return [1, 2, 3]

    def encode(self, text):
        return [ord(c) for c in text]

    def generate(self, ids, params, cancel: threading.Event, result: api.Generation):
        try:
            for i, piece in enumerate(self.pieces):
                if self.fail_after is not None and i == self.fail_after:
                    raise RuntimeError("boom")
                result.completion_tokens += 1
                yield piece
            result.finish_reason = "length"
        finally:
            self.cancelled = cancel.is_set()


def _collect(agen) -> list:
    async def run():
        return [x async for x in agen]

    return asyncio.run(run())


def _events(raw: list[bytes]) -> list:
    out = []
    for event in raw:
        assert event.startswith(b"data: ") and event.endswith(b"\n\n")
        data = event[6:-2]
        out.append(data.decode() if data == b"[DONE]" else json.loads(data))
    return out


def test_api_key_ok_accepts_bearer_and_x_api_key_only_with_the_right_key():
    key = b"sk-1"
    assert api.api_key_ok({b"authorization": b"Bearer sk-1"}, key)
    assert api.api_key_ok({b"authorization": b"bearer  sk-1 "}, key)
    assert api.api_key_ok({b"x-api-key": b"sk-1"}, key)
    assert not api.api_key_ok({b"authorization": b"Bearer sk-2"}, key)
    assert not api.api_key_ok({b"authorization": b"Basic sk-1"}, key)
    assert not api.api_key_ok({}, key)


def test_models_body_lists_the_one_model_with_its_context():
    body = api.models_body("m", 123, 4096)
    assert body == {"object": "list", "data": [{"id": "m", "object": "model", "created": 123,
                                                "owned_by": "unfork", "meta": {"n_ctx": 4096}}]}


def test_response_base_and_completion_body():
    base = api.response_base("m", chat=True)
    assert base["id"].startswith("chatcmpl-") and base["object"] == "chat.completion.chunk"
    assert api.response_base("m", chat=False)["id"].startswith("cmpl-")
    result = api.Generation(finish_reason="length", completion_tokens=4)
    body = api.completion_body(base, True, "hi", 3, result)
    assert body["object"] == "chat.completion" and body["id"] == base["id"]
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                "logprobs": None, "finish_reason": "length"}]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert api.completion_body(base, False, "hi", 3, result)["choices"][0]["text"] == "hi"


def test_stream_chunk_shapes():
    base = {"id": "x"}
    assert api.stream_chunk(base, True, "", None, first=True)["choices"][0]["delta"] == {"role": "assistant",
                                                                                        "content": ""}
    assert api.stream_chunk(base, True, None, "stop")["choices"][0]["delta"] == {}
    assert api.stream_chunk(base, False, None, "stop")["choices"][0]["text"] == ""


def test_include_usage_needs_an_object_with_the_flag():
    assert api.include_usage({"stream_options": {"include_usage": True}})
    assert not api.include_usage({"stream_options": True})
    assert not api.include_usage({})


def test_pieces_cuts_at_a_stop_and_cancels_the_engine():
    engine = PiecesEngine(["ab", "cS", "TOPd", "e"])
    result = api.Generation()
    params = api.SamplingParams(max_tokens=10, stop=["STOP"])
    assert "".join(_collect(api.pieces(engine, [1], params, result))) == "abc"
    assert result.finish_reason == "stop" and engine.cancelled


def test_stream_events_end_with_usage_and_done():
    engine = PiecesEngine(["a", "b"])
    params = api.SamplingParams(max_tokens=10)
    events = _events(_collect(api.stream_events(engine, [1, 2], params, {"id": "x"}, True, True)))
    assert [e["choices"][0]["delta"] for e in events[:4]] == [
        {"role": "assistant", "content": ""}, {"content": "a"}, {"content": "b"}, {}]
    assert events[3]["choices"][0]["finish_reason"] == "length"
    assert events[4] == {"id": "x", "choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 2,
                                                            "total_tokens": 4}}
    assert events[5] == "[DONE]"


def test_stream_events_report_a_failure_inside_the_stream():
    engine = PiecesEngine(["a", "b"], fail_after=1)
    params = api.SamplingParams(max_tokens=10)
    events = _events(_collect(api.stream_events(engine, [1], params, {"id": "x"}, False, False)))
    assert events[0]["choices"][0]["text"] == "a"
    assert events[1]["error"]["message"] == "generation failed: boom" and events[1]["error"]["code"] == 500
    assert len(events) == 2


def test_read_json_refuses_what_is_not_an_object():
    class Req:
        headers: dict = {}

        def __init__(self, raw: bytes):
            self.raw = raw

        async def stream(self):
            yield self.raw

    assert asyncio.run(api.read_json(Req(b'{"a": 1}'))) == {"a": 1}
    with pytest.raises(api.RequestError, match="not valid JSON"):
        asyncio.run(api.read_json(Req(b"{")))
    with pytest.raises(api.RequestError, match="JSON object"):
        asyncio.run(api.read_json(Req(b"[1]")))
