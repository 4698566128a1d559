"""The judge: verdict parsing, one stricter retry, counting what it could not read, bounded concurrency."""

from __future__ import annotations

import pytest

from tests.client.fake_openai import FakeOpenAI, Reply
from tests.eval.fake_judge import fake_judge
from unfork.eval.judge import Judge, open_judge, parse_agreement, parse_score


@pytest.mark.parametrize("text, expected", [
    ("Rating: [[7]]", 7),
    ("Score: 7", 7),
    ("7/10", 7),
    ("[[7]]", 7),
    ("Rating: 7 out of 10", 7),
    ('{"score": 7}', 7),
    ('```json\n{"rating": 8, "reason": "fine"}\n```', 8),
    ("The answer names 3 of the 4 facts and misses the year.\nRating: [[6]]", 6),
    ("It is mostly right. I would give it 8/10.", 8),
    ("**Rating:** 9", 9),
    ("Score: 7.5", 7.5),
    ("10", 10),
    ("  4.  ", 4),
    ("Rating: [[3]] ... after a second look, Rating: [[5]]", 5),
    ("The grade is 6 out of 10.", 6),
    ("Rating: [[11]]", None),
    ("Rating: [[0]]", None),
    ("The answer is good.", None),
    ("", None),
    (None, None),
    ("There are 3 mistakes in 12 lines.", None),
])
def test_parse_score(text, expected):
    assert parse_score(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("Verdict: [[correct]]", True),
    ("Verdict: [[incorrect]]", False),
    ("correct", True),
    ("Incorrect.", False),
    ("The answer gives 1849 but the reference says 1852, so it is wrong.", False),
    ("Both say the island is in the North Sea. The answer is correct.", True),
    ("The answer is not correct.", False),
    ('{"correct": false}', False),
    ('{"verdict": "correct"}', True),
    ("It first seems incorrect, but the year matches.\nVerdict: correct", True),
    ("Yes", True),
    ("No.", False),
    ("I cannot tell.", None),
    ("", None),
])
def test_parse_agreement(text, expected):
    assert parse_agreement(text) is expected


def test_judge_scores_with_the_reference_in_the_prompt():
    with fake_judge() as server, open_judge(server.url) as judge:
        url = server.url
        verdicts = judge.score([("Where is Marrowvey?", "Marrowvey lies in the North Sea.", "in the North Sea"),
                                ("Write a haiku.", "partly a haiku", None),
                                ("Capital of France?", "Berlin", "Paris")])
        summary = judge.summary()
    assert [v.value for v in verdicts] == [9, 5, 2]
    prompts = [b["messages"][-1]["content"] for b in server.posts()]
    assert sum("[REFERENCE ANSWER]\nin the North Sea" in p for p in prompts) == 1
    assert sum("[REFERENCE ANSWER]" in p for p in prompts) == 2  # no reference block without a reference
    assert all(b["temperature"] == 0.0 for b in server.posts())
    assert summary == {"model": url, "verdicts": 3, "unparseable": 0, "unparseable_share": 0.0,
                       "retries": 0}


def test_one_stricter_retry_then_none_is_counted():
    with fake_judge() as server, open_judge(server.url) as judge:
        verdicts = judge.score([("q1", "MUMBLE about it", None), ("q2", "SILENT", None), ("q3", "partly", None)])
    assert [v.value for v in verdicts] == [2, None, 5]
    assert [v.retried for v in verdicts] == [True, True, False]
    assert "---retry---" in verdicts[1].raw
    retries = [b for b in server.posts() if len(b["messages"]) == 4]
    assert len(retries) == 2
    assert "Rating: [[N]]" in retries[0]["messages"][-1]["content"]
    assert retries[0]["temperature"] == 0.0
    assert judge.summary()["unparseable"] == 1
    assert judge.summary()["unparseable_share"] == pytest.approx(1 / 3, abs=1e-4)
    assert judge.summary(verdicts[2:])["unparseable"] == 0


def test_agreement_verdicts():
    with fake_judge() as server, open_judge(server.url) as judge:
        verdicts = judge.agree([("When?", "It opened in 1852.", "1852"), ("When?", "1849", "1852"),
                                ("When?", "SILENT", "1852")])
    assert [v.value for v in verdicts] == [True, False, None]
    assert judge.unparseable == 1


def test_concurrency_is_bounded():
    server = FakeOpenAI(default=Reply(text="Rating: [[5]]", delay=0.05), http11=True)
    with server, open_judge(server.url, max_concurrency=2) as judge:
        verdicts = judge.score([(f"q{i}", "a", None) for i in range(8)])
    assert [v.value for v in verdicts] == [5] * 8
    assert server.max_in_flight <= 2


def test_judge_sends_the_model_name_and_keeps_its_loop_between_calls():
    with fake_judge() as server:
        from unfork.client import ClientSettings, OpenAIClient

        judge = Judge(OpenAIClient(ClientSettings(server.url)), model="judge-x")
        try:
            assert judge.score([("q", "partly", None)])[0].value == 5
            assert judge.score([("q", "no", "yes")])[0].value == 2
        finally:
            judge.close()
    assert {b["model"] for b in server.posts()} == {"judge-x"}
    assert judge.verdicts == 2


def test_the_reply_ends_at_the_verdict():
    # A real server stops at "]]" and leaves it out; the judge puts it back before parsing.
    server = FakeOpenAI(replies=[Reply(text="Mostly right.\nRating: [[7"), Reply(text="Verdict: [[incorrect")],
                        http11=True)
    with server, open_judge(server.url) as judge:
        assert judge.score([("q", "a", None)])[0].raw == "Mostly right.\nRating: [[7]]"
        assert judge.agree([("q", "a", "r")])[0].value is False
    assert all(b["stop"] == ["]]"] for b in server.posts())
