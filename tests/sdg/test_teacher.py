"""The teacher's slots and choices against a scripted server over real HTTP."""

from __future__ import annotations

import asyncio
import threading
import time

from tests.client.fake_openai import FakeOpenAI, Reply
from unfork.client import ClientSettings, OpenAIClient
from unfork.client.base import APIError
from unfork.sdg.teacher import SEED_STEP, Teacher, choices_limit, computed_prompt_tokens

MSGS = [{"role": "user", "content": "Write haikus."}]


def answer_n(body, **kw):
    """As a server does: ``n`` choices, each naming the request's seed and its own index."""
    n = body.get("n", 1)
    return Reply(choices=[f"seed {body.get('seed')} choice {i}" for i in range(n)], **kw)


def ask(fake, n, *, capacity=None, max_concurrency=8, requests=1):
    async def main():
        client = OpenAIClient(ClientSettings(fake.url, max_concurrency=max_concurrency), model="m")
        teacher = Teacher(client, "m", capacity=capacity)
        try:
            results = await asyncio.gather(*(teacher.chat(MSGS, n=n, seed=100 * (r + 1), max_tokens=16)
                                             for r in range(requests)))
        finally:
            await client.aclose()
        return teacher, results
    return asyncio.run(main())


def test_a_request_for_more_choices_than_free_slots_goes_out_in_parts_with_distinct_seeds():
    with FakeOpenAI(on_chat=answer_n) as fake:
        teacher, [res] = ask(fake, 5, capacity=2)
        posts = fake.posts()
    assert [(p.get("n", 1), p["seed"]) for p in posts] == [
        (2, 100), (2, 100 + 2 * SEED_STEP), (1, 100 + 4 * SEED_STEP)]
    assert [text for text, _ in res.choices] == [
        "seed 100 choice 0", "seed 100 choice 1", f"seed {100 + 2 * SEED_STEP} choice 0",
        f"seed {100 + 2 * SEED_STEP} choice 1", f"seed {100 + 4 * SEED_STEP} choice 0"]
    assert res.text == "seed 100 choice 0"
    assert len(teacher.busy) == 3 and sum(b[2] for b in teacher.busy) == res.usage.completion_tokens == 20


def test_choices_never_take_more_slots_than_the_servers_have():
    lock = threading.Lock()
    live = {"now": 0, "most": 0}

    def slow(body):
        with lock:
            live["now"] += body.get("n", 1)
            live["most"] = max(live["most"], live["now"])
        time.sleep(0.05)
        with lock:
            live["now"] -= body.get("n", 1)
        return answer_n(body)

    with FakeOpenAI(on_chat=slow) as fake:
        teacher, results = ask(fake, 3, max_concurrency=4, requests=6)
    assert teacher.capacity == 4 and live["most"] == 4  # full, never over
    assert all(len(r.choices) == 3 for r in results)


def test_a_server_that_allows_fewer_choices_gets_them_in_smaller_requests():
    refusal = {"error": {"code": 400, "type": "invalid_request_error",
                         "message": "Field 'n': Value must be between 1 <= value <= 2, but got 4"}}

    def picky(body):
        return Reply(status=400, body=refusal) if body.get("n", 1) > 2 else answer_n(body)

    with FakeOpenAI(on_chat=picky) as fake:
        teacher, [first] = ask(fake, 4)
        _, [second] = ask(fake, 4)
    assert len(first.choices) == 4 and len({t for t, _ in first.choices}) == 4
    assert teacher.max_choices == 2
    assert len(second.choices) == 4


def test_llama_cpp_usage_counts_one_choice_so_the_others_are_tokenized():
    timings = {"prompt_n": 3, "cache_n": 4, "predicted_n": 2}
    with FakeOpenAI(default=Reply(choices=["one two", "three four five", "six"], timings=timings),
                    tokenize=True) as fake:
        teacher, [res] = ask(fake, 3)
    assert res.usage.completion_tokens == 2  # what the server said: the first choice only
    # first choice from usage; the others tokenized, plus the end token of a stop
    assert teacher.busy[0][2] == 2 + (3 + 1) + (1 + 1)
    assert teacher.busy[0][3:] == (7, 3)


def test_other_servers_usage_already_counts_every_choice():
    with FakeOpenAI(default=Reply(choices=["one two", "three four five"])) as fake:
        teacher, _ = ask(fake, 2)
    assert teacher.busy[0][2] == 5
    assert not any(path == "/tokenize" for _, path, _ in fake.requests)


def test_choices_limit_reads_the_refusal_and_nothing_else():
    def err(status, message):
        return APIError("x", status_code=status, server_message=message)

    assert choices_limit(err(400, "Field 'n': Value must be between 1 <= value <= 8, but got 9")) == 8
    assert choices_limit(err(400, "n must be 1")) == 1
    assert choices_limit(err(400, "the prompt is too long")) is None
    assert choices_limit(err(500, "Field 'n' is odd")) is None


def test_computed_prompt_tokens_trusts_llama_cpp_timings_only_when_they_make_sense():
    assert computed_prompt_tokens({"timings": {"prompt_n": 12, "cache_n": 288}}, 300) == 12
    assert computed_prompt_tokens({"usage": {}}, 300) == 300  # a server that does not say: all of them
    assert computed_prompt_tokens({"timings": {"prompt_n": 900}}, 300) == 300
    assert computed_prompt_tokens({"timings": "odd"}, 300) == 300


def test_the_slots_are_those_of_every_endpoint():
    from unfork.client import MultiClient

    clients = [OpenAIClient(ClientSettings(f"http://127.0.0.1:{port}/v1", max_concurrency=3), model="m")
               for port in (9, 10)]
    assert Teacher(MultiClient(clients), "m").capacity == 6
    assert Teacher(clients[0], "m").capacity == 3
    assert Teacher(clients[0], "m", capacity=5).capacity == 5
