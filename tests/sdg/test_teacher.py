"""The teacher's slots and choices: against a scripted server over real HTTP, and against a scripted client
whose requests end when the test says, on a fake clock."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tests.client.fake_openai import FakeOpenAI, Reply
from unfork.client import ClientSettings, OpenAIClient
from unfork.client.base import APIError, ChatResult, Usage
from unfork.sdg.teacher import SEED_STEP, Teacher, choices_limit, computed_prompt_tokens

MSGS = [{"role": "user", "content": "Write haikus."}]


def msgs(i):
    """A prompt of its own: requests with the same prompt are scheduled to meet the slot that holds it."""
    return [{"role": "user", "content": f"Write haikus, {i}."}]


def answer_n(body, **kw):
    """As a server does: ``n`` choices, each naming the request's seed and its own index."""
    n = body.get("n", 1)
    return Reply(choices=[f"seed {body.get('seed')} choice {i}" for i in range(n)], **kw)


def ask(fake, n, *, capacity=None, max_concurrency=8, requests=1, stream=True):
    async def main():
        client = OpenAIClient(ClientSettings(fake.url, max_concurrency=max_concurrency), model="m")
        teacher = Teacher(client, "m", capacity=capacity, stream_choices=stream)
        try:
            results = await asyncio.gather(*(teacher.chat(msgs(r), n=n, seed=100 * (r + 1), max_tokens=16)
                                             for r in range(requests)))
        finally:
            await client.aclose()
        return teacher, results
    return asyncio.run(main())


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass(eq=False)
class Sent:
    """One request the scripted client got, and when (on the fake clock)."""
    prompt: str
    n: int
    seed: int | None
    at: float
    reply: asyncio.Future = field(repr=False)


class ScriptedClient:
    """Whole (not streamed) replies: each request waits until the test ends it, as a server's slot would."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.sent: list[Sent] = []

    async def chat(self, messages: list[dict[str, str]], *, model: str | None = None, **params: Any) -> ChatResult:
        sent = Sent(messages[0]["content"], params.get("n", 1), params.get("seed"), self.clock(),
                    asyncio.get_running_loop().create_future())
        self.sent.append(sent)
        return await sent.reply

    def asked(self) -> list[tuple[int, int | None]]:
        return [(s.n, s.seed) for s in self.sent]

    def end(self, sent: Sent) -> None:
        """``sent`` ends, with a choice per slot, each naming the request's seed and its own index."""
        choices = [{"index": i, "message": {"role": "assistant", "content": f"seed {sent.seed} choice {i}"},
                    "finish_reason": "stop"} for i in range(sent.n)]
        sent.reply.set_result(ChatResult(choices[0]["message"]["content"], "stop", Usage(1, sent.n), "m",
                                         {"choices": choices}))


async def settle() -> None:
    """Let every task run until it waits on a reply: loop turns, not wall-clock time."""
    for _ in range(50):
        await asyncio.sleep(0)


def simulate(asks, *, capacity, seconds):
    """``asks``: (prompt, n, seed) sent in this order, all at once, to a teacher with ``capacity`` slots, on
    a fake clock; a request takes ``seconds(sent)``, and the one that ends soonest ends first. Returns the
    teacher, the client and the replies."""
    async def main():
        clock = Clock()
        client = ScriptedClient(clock)
        teacher = Teacher(client, "m", capacity=capacity, stream_choices=False, clock=clock)
        tasks = []
        for prompt, n, seed in asks:  # in this order: the queue's
            tasks.append(asyncio.create_task(
                teacher.chat([{"role": "user", "content": prompt}], n=n, seed=seed, max_tokens=16)))
            await asyncio.sleep(0)
        await settle()
        while out := [s for s in client.sent if not s.reply.done()]:
            soonest = min(out, key=lambda s: s.at + seconds(s))  # on a tie, the one sent first
            clock.now = soonest.at + seconds(soonest)
            client.end(soonest)
            await settle()
        return teacher, client, await asyncio.gather(*tasks)
    return asyncio.run(main())


def test_a_request_for_more_choices_than_free_slots_goes_out_in_parts_with_distinct_seeds():
    with FakeOpenAI(on_chat=answer_n) as fake:
        teacher, [res] = ask(fake, 5, capacity=2, stream=False)  # whole replies: 2 slots free at once
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


def test_a_slot_is_given_to_the_next_request_the_moment_its_choice_ends():
    """With 2 slots, a 2-choice reply whose second choice is short frees a slot long before its first ends;
    a request waiting for a slot gets it then, unless replies are read whole."""
    def reply(body):
        if body.get("n", 1) == 2:
            return Reply(choices=[" ".join(["word"] * 40), "short"], chunk_delay=0.01)
        return Reply(text="quick")

    def order(stream):
        async def main():
            client = OpenAIClient(ClientSettings(fake.url, max_concurrency=2), model="m")
            teacher = Teacher(client, "m", stream_choices=stream)
            done: list[str] = []

            async def one(name, n):
                await teacher.chat(MSGS, n=n, max_tokens=64)
                done.append(name)
            try:
                wide = asyncio.create_task(one("wide", 2))
                await asyncio.sleep(0)  # the wide request takes both slots first
                await asyncio.gather(wide, one("narrow", 1))
            finally:
                await client.aclose()
            return done
        return asyncio.run(main())

    with FakeOpenAI(on_chat=reply, http11=True) as fake:
        assert order(stream=True) == ["narrow", "wide"]
        assert order(stream=False) == ["wide", "narrow"]
        wide = [p for p in fake.posts() if p.get("n") == 2]
    assert [p.get("stream", False) for p in wide] == [True, False]


def test_a_freed_slot_goes_on_with_its_own_request_before_the_next_one_gets_it():
    """The slot holds the request's prompt: its next choices cost no prompt there, the next request's would."""
    teacher, client, results = simulate([("A", 4, 100), ("B", 1, 200)], capacity=2, seconds=lambda s: 0.1)
    assert client.asked() == [(2, 100), (2, 100 + 2 * SEED_STEP), (1, 200)]
    assert [s.at for s in client.sent] == [0.0, 0.1, 0.2]
    assert [len(r.choices) for r in results] == [4, 1]
    assert [text for text, _ in results[0].choices] == [
        "seed 100 choice 0", "seed 100 choice 1", *(f"seed {100 + 2 * SEED_STEP} choice {i}" for i in range(2))]


def test_only_the_slot_of_a_streamed_requests_first_choice_goes_on_with_it():
    """llama.cpp clears the slots of the other choices as they end: going on there would compute the prompt
    again, so those slots go to the next request."""
    def reply(body):
        if body.get("n", 1) == 2:  # the second choice (a child slot) ends long before the first
            return Reply(choices=[" ".join(["word"] * 40), "short"], chunk_delay=0.01)
        return answer_n(body)

    async def main():
        client = OpenAIClient(ClientSettings(fake.url, max_concurrency=2), model="m")
        teacher = Teacher(client, "m")
        try:  # the second request is queued behind the first from the start
            return await asyncio.gather(teacher.chat(MSGS, n=3, seed=100, max_tokens=64),
                                        teacher.chat(msgs(2), seed=200, max_tokens=8))
        finally:
            await client.aclose()

    with FakeOpenAI(on_chat=reply, http11=True) as fake:
        wide, narrow = asyncio.run(main())
        posts = [(p.get("n", 1), p["seed"]) for p in fake.posts()]
    assert posts == [(2, 100), (1, 200), (1, 100 + 2 * SEED_STEP)]
    assert len(wide.choices) == 3 and narrow.text == "seed 200 choice 0"


def test_a_queued_request_takes_the_slots_it_finds_and_with_none_queued_free_slots_take_its_other_choices():
    # the second request's parts are slow, the first is quick
    teacher, client, results = simulate([("A", 3, 100), ("B", 4, 200)], capacity=4,
                                        seconds=lambda s: 0.1 if s.seed == 100 else 0.5)
    # the second did not wait for 4 free slots; when the first ended, its 3 slots took the second's other
    # choices (their prompt computed again) rather than idle
    assert client.asked() == [(3, 100), (1, 200), (3, 200 + SEED_STEP)]
    assert [s.at for s in client.sent] == [0.0, 0.0, 0.1]
    assert [text for text, _ in results[1].choices] == [
        "seed 200 choice 0", *(f"seed {200 + SEED_STEP} choice {i}" for i in range(3))]
    assert teacher.occupancy == [(0.0, 3), (0.0, 4), (0.1, 1), (0.1, 4), (0.5, 3), (0.6, 0)]


def test_slots_busy_is_the_share_of_slot_time_held():
    from unfork.sdg.teacher import slots_busy

    # 4 slots over 10 s: 2 held from 0 to 5, all 4 from 5 to 8, none after
    assert slots_busy([(0.0, 2), (5.0, 4), (8.0, 0)], 4, 0.0, 10.0) == (2 * 5 + 4 * 3) / 40
    assert slots_busy([], 4, 0.0, 10.0) == 0.0


def test_a_server_that_refuses_streamed_replies_gets_whole_requests():
    refusal = {"error": {"code": 400, "message": "Unrecognized request argument supplied: stream_options"}}

    def no_streams(body):
        return Reply(status=400, body=refusal) if body.get("stream") else answer_n(body)

    with FakeOpenAI(on_chat=no_streams) as fake:
        teacher, [first, second] = ask(fake, 2, requests=2)
        streamed = [bool(p.get("stream")) for p in fake.posts()]
    assert len(first.choices) == len(second.choices) == 2 and not teacher.stream_choices
    assert streamed.count(True) >= 1 and streamed[-1] is False


def test_a_failed_request_raises_and_gives_its_slots_back():
    bad = {"error": {"code": 400, "message": "the prompt is odd"}}

    def reply(body):
        return Reply(status=400, body=bad) if body["seed"] == 100 else answer_n(body, delay=0.05)

    async def main():
        client = OpenAIClient(ClientSettings(fake.url, max_concurrency=2), model="m")
        teacher = Teacher(client, "m", stream_choices=False)
        try:
            failed, fine = await asyncio.gather(teacher.chat(MSGS, n=3, seed=100, max_tokens=8),
                                                teacher.chat(MSGS, n=3, seed=200, max_tokens=8),
                                                return_exceptions=True)
        finally:
            await client.aclose()
        return teacher, failed, fine

    with FakeOpenAI(on_chat=reply) as fake:
        teacher, failed, fine = asyncio.run(main())
        seeds = [p["seed"] for p in fake.posts()]
    assert isinstance(failed, APIError) and len(fine.choices) == 3
    assert seeds.count(100) == 1  # nothing more of the failed request went out
    assert teacher.slots.free == teacher.capacity and not teacher.slots.started and not teacher.slots.held


def test_a_cancelled_request_stops_its_parts_and_gives_its_slots_back():
    async def main():
        client = ScriptedClient(Clock())
        teacher = Teacher(client, "m", capacity=2, stream_choices=False)
        slow = asyncio.create_task(teacher.chat(MSGS, n=4, seed=100, max_tokens=8))
        await settle()
        assert client.asked() == [(2, 100)]
        slow.cancel()
        await asyncio.gather(slow, return_exceptions=True)
        await settle()
        free, started = teacher.slots.free, bool(teacher.slots.started)
        quick = asyncio.create_task(teacher.chat(MSGS, n=2, seed=200, max_tokens=8))
        await settle()
        client.end(client.sent[-1])
        return free, started, client, await quick

    free, started, client, quick = asyncio.run(main())
    seeds = [s.seed for s in client.sent]
    assert free == 2 and not started and len(quick.choices) == 2
    assert client.sent[0].reply.cancelled()  # its part stopped
    assert seeds.count(100) == 1 and 100 + 2 * SEED_STEP not in seeds


def prompts_in_order(asks, *, capacity, slow):
    """``asks``: prompts (or (prompt, choices)) sent in this order, all at once, to a teacher with ``capacity``
    slots; those in ``slow`` take 0.4 s, the others 0.05 s (on a fake clock). Returns the requests as
    (prompt, choices), in the order they were sent, and when each was sent."""
    asks = [(ask, 1) if isinstance(ask, str) else ask for ask in asks]
    teacher, client, _ = simulate([(prompt, n, i) for i, (prompt, n) in enumerate(asks)], capacity=capacity,
                                  seconds=lambda s: 0.4 if s.prompt in slow else 0.05)
    assert not teacher.slots.held and teacher.slots.free == capacity  # every hold given back
    assert sorted(b[0] for b in teacher.busy) == [s.at for s in client.sent]
    return [(s.prompt, s.n) for s in client.sent], [s.at for s in client.sent]


def test_a_slot_with_no_prompt_of_use_takes_a_request_whose_prompt_no_busy_slot_holds():
    """The second P waits for the slot busy with P, where its prompt costs nothing; Q's slot takes R, which
    has to be computed anyway."""
    order, _ = prompts_in_order(["P", "Q", "P", "R"], capacity=2, slow={"P"})
    assert order == [("P", 1), ("Q", 1), ("R", 1), ("P", 1)]


def test_the_slot_of_a_finished_request_takes_a_queued_request_with_its_prompt_first():
    order, _ = prompts_in_order(["P", "Q", "R", "P"], capacity=2, slow={"Q"})
    assert order == [("P", 1), ("Q", 1), ("P", 1), ("R", 1)]


def test_with_every_queued_prompt_held_a_free_slot_takes_the_first_rather_than_wait():
    order, starts = prompts_in_order(["P", "Q", ("P", 2)], capacity=2, slow={"P"})
    # Q's slot took one choice (its prompt computed again) when Q ended; the other went on there after it
    assert order == [("P", 1), ("Q", 1), ("P", 1), ("P", 1)]
    assert starts == [0.0, 0.0, 0.05, 0.4]  # the third when Q ended, not when the first P did
