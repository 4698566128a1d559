"""The engine against a scripted teacher over real HTTP: exact rows, messages and rejections."""

from __future__ import annotations

import asyncio
import hashlib
import json
import textwrap
import time

import pytest

from tests.client.fake_openai import FakeOpenAI, Reply
from unfork.client import ClientSettings, OpenAIClient
from unfork.sdg.engine import generate
from unfork.sdg.output import write_dataset
from unfork.sdg.pipeline import load_pipeline
from unfork.sdg.teacher import Teacher
from unfork.taxonomy.leaf import load_leaf

QNA = textwrap.dedent("""\
    version: 3
    task_description: Write a haiku about the subject given.
    created_by: tests
    seed_examples:
      - question: Write a haiku about rain.
        answer: |
          Rain on the tin roof
          a drum for the sleeping town
          puddles hold the sky
      - question: Write a haiku about snow.
        answer: |
          Snow hides the footpath
          every step a first step now
          white hush on the hills
      - question: Write a haiku about the sea.
        answer: |
          Grey waves fold and break
          salt wind carries gull voices
          the tide keeps its time
      - question: Write a haiku about a city.
        answer: |
          Neon in puddles
          taxis stitch the streets with light
          no stars overhead
      - question: Write a haiku about bread.
        answer: |
          Warm crust cracks open
          steam rises from the soft heart
          the kitchen smells gold
    """)

KITE = "Write a haiku about a kite over the dunes."
KITE_ANSWER = "Red kite climbs the wind\nits string hums above the dunes\nsand runs at my feet"


def chats(fake):
    return [body for method, path, body in fake.requests if path == "/v1/chat/completions"]


def script(body):
    prompt = body["messages"][-1]["content"]
    if "new requests of the same kind" in prompt:
        return Reply(text=f"1. {KITE}\n2. Write a haiku about a kite over the dunes!\n"
                          "3. Compose a haiku on morning trains.\n4. Tell me a joke about cats.\n")
    if "Rate each numbered request" in prompt:
        lines = [ln for ln in prompt.splitlines() if ln[:2] in ("1.", "2.", "3.")]
        return Reply(text="\n".join(f"{i}: {0 if 'joke' in ln else 2}" for i, ln in enumerate(lines, 1)))
    if "Respond to the next request" in prompt:
        return Reply(text=KITE_ANSWER if "kite" in prompt.rsplit("Request:", 1)[1] else "a weak answer here")
    if "Score each numbered request and response" in prompt:
        blocks = prompt.split("\n[")[1:]
        return Reply(text="\n".join(f"{i}: {2 if 'weak' in b else 5}" for i, b in enumerate(blocks, 1)))
    return Reply(text="I'm sorry, I cannot help with that.")


@pytest.fixture
def leaf(tmp_path):
    folder = tmp_path / "taxonomy" / "compositional_skills" / "writing" / "kites"
    folder.mkdir(parents=True)
    (folder / "qna.yaml").write_text(QNA)
    return load_leaf(folder / "qna.yaml", tmp_path / "taxonomy")


def run(leaf, fake, pipeline="full", target=1, cache=None, settings=None, **kwargs):
    async def main():
        client = OpenAIClient(settings or ClientSettings(fake.url, max_concurrency=2), model=None)
        teacher = Teacher(client, "fake-model")
        try:
            return teacher, await generate([leaf], load_pipeline(pipeline), teacher, target=target, concurrency=2,
                                           seed=7, cache_root=cache, units_in_flight=1, **kwargs)
        finally:
            await client.aclose()
    return asyncio.run(main())


def test_full_freeform_flow_exact_rows_messages_and_rejections(leaf, tmp_path):
    with FakeOpenAI(on_chat=script) as fake:
        _, (res,) = run(leaf, fake, cache=tmp_path / "cache")
        posts = chats(fake)
    assert res.units == 1 and res.error is None and not res.reused
    [sample] = res.accepted
    row = {k: v for k, v in sample["row"].items() if k not in ("examples", "_trace")}
    assert row == {"question": KITE, "answer": KITE_ANSWER, "question_score": 2.0, "pair_score": 5.0}
    assert len(sample["row"]["_trace"]) == 4  # questions, question judge, answer, pair judge
    assert [(r["step"], r["reason"]) for r in res.rejected] == [
        ("question_dedup", "near-duplicate (rouge_l ≥ 0.70)"),
        ("judge_questions", "below threshold (0)"),
        ("judge_pairs", "below threshold (2)"),
    ]
    assert res.rejected[0]["row"]["similarity"] == 1.0
    assert res.rejected[2]["row"]["answer"] == "a weak answer here"
    assert "2: 2" in res.rejected[2]["raw"]  # the judge's own words are kept
    # The first request, exactly: system prompt, then the template with every seed question.
    first = posts[0]
    assert first["messages"] == [
        {"role": "system", "content": "You write training data for a language model. "
                                      "Follow the requested format exactly."},
        {"role": "user", "content": "Task: Write a haiku about the subject given.\n\n"
                                    "Requests people have written for this task:\n"
                                    "- Write a haiku about rain.\n- Write a haiku about snow.\n"
                                    "- Write a haiku about the sea.\n- Write a haiku about a city.\n"
                                    "- Write a haiku about bread.\n\n"
                                    "Write 5 new requests of the same kind: instructions a user would give, "
                                    "not their answers. Make each one concrete, "
                                    "self-contained and different from the ones above and from each other. "
                                    "Reply with a numbered list (1., 2., ...) of the requests only."}]
    assert first["temperature"] == 1.0 and first["max_tokens"] == 320 and isinstance(first["seed"], int)
    assert len(posts) == 5  # questions, question judge, 2 answers (kite, trains), pair judge
    out = tmp_path / "out"
    write_dataset(out, [res], load_pipeline("full"), teacher="fake-model", seed=7, settings={}, stats={})
    lines = [json.loads(x) for x in (out / "train_skills.jsonl").read_text().splitlines()]
    assert lines == [{
        "messages": [{"role": "system", "content": "You are a helpful, accurate assistant."},
                     {"role": "user", "content": KITE}, {"role": "assistant", "content": KITE_ANSWER}],
        "metadata": {"leaf": "compositional_skills/writing/kites", "pipeline": "full", "teacher": "fake-model",
                     "scores": {"question_score": 2.0, "pair_score": 5.0}, "kind": "freeform_skill",
                     "format": "qa"}}]
    tests = [json.loads(x) for x in (out / "test_skills.jsonl").read_text().splitlines()]
    assert [t["messages"][1]["content"] for t in tests][:2] == ["Write a haiku about rain.",
                                                                 "Write a haiku about snow."]
    assert (out / "train_knowledge.jsonl").read_text() == ""
    assert json.loads((out / "manifest.json").read_text())["files"]["train_all.jsonl"] == 1


def test_a_second_run_reuses_the_journal_without_asking_the_teacher(leaf, tmp_path):
    with FakeOpenAI(on_chat=script) as fake:
        run(leaf, fake, cache=tmp_path / "cache")
        before = len(chats(fake))
        _, (res,) = run(leaf, fake, cache=tmp_path / "cache")
        assert len(chats(fake)) == before
    assert res.reused and len(res.accepted) == 1 and len(res.rejected) == 3


def test_a_larger_target_adds_units_and_repeats_no_request(leaf, tmp_path):
    with FakeOpenAI(on_chat=script) as fake:
        run(leaf, fake, cache=tmp_path / "cache")
        first = chats(fake)
        _, (res,) = run(leaf, fake, cache=tmp_path / "cache", target=2)
        second = chats(fake)[len(first):]
    # Units 1 and 2 run (the budget for 2 samples at 3 per unit is 3 units); unit 0 is not redone.
    assert res.units == 3 and sorted({r["unit"] for r in res.rejected}) == [0, 1, 2]
    assert second and not any(body in first for body in second)
    # The scripted teacher repeats itself, so the new units find only near-duplicates of the kept question.
    assert len(res.accepted) == 1


def test_prompt_longer_than_the_context_is_rejected_with_the_reason(leaf, tmp_path):
    with FakeOpenAI(on_chat=script, context_length=300) as fake:
        teacher, (res,) = run(leaf, fake, cache=tmp_path / "cache")
        assert chats(fake) == []
    assert teacher.context_window == 300
    assert res.accepted == []
    assert res.rejected[0]["step"] == "new_questions"
    assert res.rejected[0]["reason"].startswith("prompt too long: ")
    assert "+ 320 to generate > context window 300" in res.rejected[0]["reason"]


def test_server_errors_after_retries_become_rejections_and_429_is_retried(leaf, tmp_path):
    def fast(url):
        return ClientSettings(url, max_retries=1, backoff_base=0.01, backoff_max=0.02, max_concurrency=2)

    with FakeOpenAI(default=Reply(status=500)) as fake:
        _, (res,) = run(leaf, fake, cache=tmp_path / "a", settings=fast(fake.url))
    assert res.accepted == []
    assert {r["reason"].split(":")[0] for r in res.rejected} == {"teacher error"}
    with FakeOpenAI(on_chat=script) as fake:
        fake.push(Reply(status=429, headers={"Retry-After": "0"}))
        _, (res,) = run(leaf, fake, cache=tmp_path / "b", settings=fast(fake.url))
    assert len(res.accepted) == 1


def test_refusals_and_unparseable_replies_keep_the_raw_text(leaf, tmp_path):
    replies = [Reply(text="I'm sorry, but I can't write that."), Reply(text="Some text without any list.")]
    with FakeOpenAI(replies=replies, default=Reply(text="Nothing useful.")) as fake:
        _, (res,) = run(leaf, fake, cache=tmp_path / "c")
    assert res.accepted == []
    assert res.rejected[0] == {"unit": 0, "status": "rejected", "step": "new_questions", "reason": "refusal",
                               "row": res.rejected[0]["row"], "raw": "I'm sorry, but I can't write that."}
    assert res.rejected[1]["reason"] == "unparseable: no numbered items found"
    assert res.rejected[1]["raw"] == "Some text without any list."




SUBJECTS = ["a lighthouse", "a bicycle", "an old clock", "a paper boat", "a fox", "a violin", "a cactus",
            "a comet", "a teapot", "a glacier", "a scarecrow", "a submarine", "a beehive", "a canyon", "a kettle",
            "a windmill"]


def pairs_per_choice(body):
    """The simple pipeline's request: each of the ``n`` choices writes 4 pairs (of the 6 asked) on subjects no choice repeats;
    the last choice ends with a request and no response."""
    n = body.get("n", 1)
    texts = []
    for c in range(n):
        subjects = SUBJECTS[4 * c:4 * c + 4]
        text = "\n".join(f"Request: Write a haiku about {s}.\nResponse: Line one on {s}\nline two\nline three"
                         for s in subjects)
        texts.append(text + ("\nRequest: Write a haiku about" if c == n - 1 else ""))
    return Reply(choices=texts)


def test_choices_become_samples_from_one_request_and_a_rerun_replays_them(leaf, tmp_path):
    with FakeOpenAI(on_chat=pairs_per_choice) as fake:
        four = ClientSettings(fake.url, max_concurrency=4)  # slots for the pipeline's 4 choices
        _, (res,) = run(leaf, fake, pipeline="simple", target=10, cache=tmp_path / "cache", settings=four)
        [body] = chats(fake)
        _, (again,) = run(leaf, fake, pipeline="simple", target=10, cache=tmp_path / "cache", settings=four)
        assert len(chats(fake)) == 1
    assert body["n"] == 4 and "Write 6 new examples" in body["messages"][-1]["content"]
    questions = [s["row"]["question"] for s in res.accepted]
    assert questions == [f"Write a haiku about {s}." for s in SUBJECTS]
    assert len({tuple(s["row"]["_trace"]) for s in res.accepted}) == 1 and res.units == 1  # one request
    assert [r["reason"] for r in res.rejected] == ["unparseable: record without answer"]
    assert again.reused and [s["row"]["question"] for s in again.accepted] == questions


def test_with_slots_to_spare_a_leaf_starts_its_next_unit_before_the_running_one_falls_short(leaf, tmp_path):
    """A unit yields 4 samples (one pair per choice) of the 8 wanted; the flow expects 16. Its short choices
    end long before its long one: with those slots idle and nothing queued, the leaf starts the unit it
    will need then, not when the first unit ends and turns out short."""
    first_post: dict[int, float] = {}
    ended: dict[int, float] = {}

    def reply(body):
        seed = body["seed"]
        first_post.setdefault(seed, time.monotonic())
        pairs = [f"Request: Write a haiku about thing {seed} {i}.\nResponse: Slow lines about thing {seed} {i}."
                 for i in range(body.get("n", 1))]
        pairs[0] += " and" * 60  # the first choice is long: its slot ends last
        return Reply(choices=pairs, chunk_delay=0.005)

    async def main():
        client = OpenAIClient(ClientSettings(fake.url, max_concurrency=8), model=None)
        teacher = Teacher(client, "fake-model")

        def progress(result, target, finished):
            ended.setdefault(result.units, time.monotonic())
        try:
            return await generate([leaf], load_pipeline("simple"), teacher, target=8, concurrency=8, seed=7,
                                  cache_root=tmp_path / "cache", progress=progress)
        finally:
            await client.aclose()

    with FakeOpenAI(on_chat=reply, http11=True) as fake:
        (res,) = asyncio.run(main())
    assert res.units == 2 and len(res.accepted) == 8
    first, second = sorted(first_post.values())
    assert second < ended[1]  # the second unit was asked for before the first one ended


def test_leaves_take_turns_starting_units(leaf, tmp_path):
    """Each of a leaf's units asks the teacher the same prompt. Had the first leaf taken both units the
    engine runs at once, the teacher's queue would hold that prompt alone, and the free slots would compute
    it again rather than take the other leaf's."""
    folder = tmp_path / "taxonomy" / "compositional_skills" / "writing" / "limericks"
    folder.mkdir(parents=True)
    (folder / "qna.yaml").write_text(QNA.replace("Write a haiku about the subject given.",
                                                 "Write a limerick about the subject given."))
    other = load_leaf(folder / "qna.yaml", tmp_path / "taxonomy")
    kinds = []

    def reply(body):
        kinds.append("limerick" if "limerick" in body["messages"][-1]["content"] else "haiku")
        subjects = [hashlib.sha256(f"{body['seed']} {i}".encode()).hexdigest()[:8] for i in range(body.get("n", 1))]
        return Reply(choices=[f"Request: Write about {s} today.\nResponse: Lines about {s}." for s in subjects],
                     delay=0.02)

    async def main():
        client = OpenAIClient(ClientSettings(fake.url, max_concurrency=8), model=None)
        teacher = Teacher(client, "fake-model")
        try:
            return await generate([leaf, other], load_pipeline("simple"), teacher, target=40, concurrency=8,
                                  seed=7, cache_root=tmp_path / "cache", units_in_flight=2)
        finally:
            await client.aclose()

    with FakeOpenAI(on_chat=reply, http11=True) as fake:
        results = asyncio.run(main())
    assert [len(r.accepted) >= 40 for r in results] == [True, True]
    assert sorted(kinds[:2]) == ["haiku", "limerick"]  # each leaf's first unit took 4 of the 8 slots


def test_with_slots_to_spare_a_leaf_counts_on_its_running_units_yielding_as_little_as_its_worst(leaf, tmp_path):
    from unfork.sdg.engine import LeafRun

    run = LeafRun(leaf, load_pipeline("simple"), None, tmp_path, target=60, seed=7, key="k")
    assert run.wants_more() and run.wants_more(margin=True)
    run.in_flight = 4  # 4 × 16 (the flow's guess) ≥ 60; with room, as if one of them yields nothing
    assert not run.wants_more() and run.wants_more(margin=True)
    for unit, accepted in enumerate([20, 4]):
        run.finish_unit(unit, [{"status": "accepted", "row": {"n": i}} for i in range(accepted)],
                        [{"status": "rejected", "row": {}, "step": "s", "reason": "r"}])
    run.in_flight = 3  # 24 accepted; 3 × 12 (their mean) ≥ 36 to go; 3 × 4 (the worst) is not
    assert not run.wants_more() and run.wants_more(margin=True)
    run.in_flight = 9
    assert not run.wants_more(margin=True)
    run.close()
