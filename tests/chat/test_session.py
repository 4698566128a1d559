"""Conversation bookkeeping: trimming, save and load (InstructLab's session format)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unfork.chat.session import (
    Conversation,
    estimate_messages,
    find_session,
    session_path,
)
from unfork.errors import UserError
from unfork.tokens import estimate_tokens


def conv_with(n_exchanges: int, size: int = 300) -> Conversation:
    c = Conversation(system="Be brief.")
    for i in range(n_exchanges):
        c.add("user", f"question {i} " + "q" * size)
        c.add("assistant", f"answer {i} " + "a" * size)
    return c


def test_estimate_is_conservative_for_english_and_cjk():
    english = "The quick brown fox jumps over the lazy dog. " * 20  # ~200 real tokens
    assert estimate_tokens(english) >= 250
    assert estimate_tokens("日本語のテキスト" * 10) >= 80  # about one token per character
    assert estimate_messages([{"role": "user", "content": ""}]) > 0


def test_fit_drops_oldest_exchanges_keeps_system_and_question():
    c = conv_with(6)
    c.add("user", "the new question")
    before = estimate_messages(c.context())
    dropped = c.fit(before // 2)
    ctx = c.context()
    assert dropped > 0 and dropped % 2 == 0
    assert ctx[0] == {"role": "system", "content": "Be brief."}
    assert ctx[1]["role"] == "user"  # starts with a question, never an orphan answer
    assert ctx[-1] == {"role": "user", "content": "the new question"}
    assert estimate_messages(ctx) <= before // 2
    assert len(c.messages()) == 14  # the full transcript is kept for saving


def test_fit_never_drops_the_last_message():
    c = Conversation(system="s")
    c.add("user", "x" * 10_000)
    assert c.fit(10) == 0
    assert c.context()[-1]["content"] == "x" * 10_000


@given(st.lists(st.integers(min_value=0, max_value=400), min_size=1, max_size=12),
       st.integers(min_value=20, max_value=3000))
def test_fit_invariants(sizes, budget):
    c = Conversation(system="sys")
    for i, n in enumerate(sizes):
        c.add("user" if i % 2 == 0 else "assistant", "w" * n)
    c.fit(budget)
    ctx = c.context()
    assert ctx[0]["role"] == "system"
    assert ctx[-1] == c.turns[-1]
    # Either it fits, or only the last message is left besides the system prompt.
    assert estimate_messages(ctx) <= budget or len(ctx) == 2
    if len(ctx) > 2:
        assert ctx[1]["role"] == "user"


def test_save_load_round_trip_in_ilab_format(tmp_path):
    c = conv_with(2, size=5)
    path = c.save(tmp_path / "s.json")
    data = json.loads(path.read_text())
    assert isinstance(data, list) and data[0] == {"role": "system", "content": "Be brief."}
    back = Conversation.load(path)
    assert back.messages() == c.messages()


def test_load_ilab_session_and_wrapped_format(tmp_path):
    ilab = [{"role": "system", "content": "I am Granite."}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"}]
    (tmp_path / "ilab.json").write_text(json.dumps(ilab))
    (tmp_path / "wrapped.json").write_text(json.dumps({"messages": ilab[1:]}))
    assert Conversation.load(tmp_path / "ilab.json", default_system="other").system == "I am Granite."
    wrapped = Conversation.load(tmp_path / "wrapped.json", default_system="kept")
    assert wrapped.system == "kept" and len(wrapped.turns) == 2


@pytest.mark.parametrize("content, match", [("{not json", "not a JSON chat session"), ('"text"', "list of messages"),
                                            ('[{"role": "user"}]', "message 1"),
                                            ('[{"role": "tool", "content": "x"}]', "role 'tool'")])
def test_load_rejects_bad_files(tmp_path, content, match):
    (tmp_path / "bad.json").write_text(content)
    with pytest.raises(UserError, match=match):
        Conversation.load(tmp_path / "bad.json")


def test_session_paths(tmp_path):
    logs = tmp_path / "logs"
    assert session_path("mine", logs) == logs / "mine.json"
    assert session_path("mine.txt", logs) == logs / "mine.txt"
    assert session_path("sub/x.json", logs).as_posix() == "sub/x.json"
    assert session_path(None, logs).parent == logs
    with pytest.raises(UserError, match="no saved sessions"):
        find_session(None, logs)
    logs.mkdir()
    (logs / "a.json").write_text("[]")
    assert find_session(None, logs) == logs / "a.json"
