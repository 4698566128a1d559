from unfork.sdg import parsers


def test_numbered_list_items_markers_and_continuations():
    raw = ("Here are some:\n1. Write a haiku about rain.\n2) **Write a haiku about\n   a cat.**\n"
           "3: \"Describe a storm.\"\n")
    out = parsers.numbered_list(raw, False, ["question"])
    assert out.items == [{"question": "Write a haiku about rain."}, {"question": "Write a haiku about a cat."},
                         {"question": "Describe a storm."}]
    assert out.problems == []


def test_numbered_list_bullets_and_truncation():
    out = parsers.numbered_list("- one thing\n- two things\n- thr", True, ["q"])
    assert out.items == [{"q": "one thing"}, {"q": "two things"}]
    assert out.problems == ["truncated: the last item was cut off by the token limit"]


def test_numbered_list_nothing():
    out = parsers.numbered_list("I cannot do that.", False, ["q"])
    assert out.items == [] and out.problems == ["no numbered items found"]


def test_labeled_records_multiline_and_missing_fields():
    raw = ("Question 1: What is the capital?\nAnswer 1: Port Sorrel.\n\n"
           "**Question:** How tall is the light?\n**Answer:** It is\n38 metres tall.\n\n"
           "Question: Orphan without answer?\n\nQ: Short label?\nA: Yes.\n")
    out = parsers.labeled(raw, False, ["question", "answer"], labels={"question": ["Question", "Q"],
                                                                     "answer": ["Answer", "A"]})
    assert out.items == [
        {"question": "What is the capital?", "answer": "Port Sorrel."},
        {"question": "How tall is the light?", "answer": "It is\n38 metres tall."},
        {"question": "Short label?", "answer": "Yes."},
    ]
    assert out.problems == ["record without answer"]


def test_labeled_truncated_drops_last_record():
    raw = "Text: a\nRequest: b\nResponse: c\n\nText: d\nRequest: e\nResponse: cut of"
    out = parsers.labeled(raw, True, ["context", "question", "answer"],
                          labels={"context": "Text", "question": "Request", "answer": "Response"})
    assert out.items == [{"context": "a", "question": "b", "answer": "c"}]
    assert out.problems[0].startswith("truncated")


def test_text_parser():
    assert parsers.text("  Response: hello\nworld ", False, ["answer"]).items == [{"answer": "hello\nworld"}]
    assert parsers.text("", False, ["answer"]).problems == ["empty reply"]
    assert parsers.text("long", True, ["answer"]).problems[0].startswith("truncated")


def test_scores_parser_formats():
    raw = "1: 5\n[2] 3/5\n**3.** Score: 4\nPair 4 - 1\n15\nnonsense"
    out = parsers.scores(raw, False, ["s"])
    assert out.items == [{"index": 1, "s": 5.0}, {"index": 2, "s": 3.0}, {"index": 3, "s": 4.0},
                         {"index": 4, "s": 1.0}]
    assert parsers.scores("looks good", False, ["s"]).problems


def test_verdicts_parser():
    raw = ("1: faithful=yes, relevant=yes, clear=no\n"
           "2. Faithful: no; Relevant: yes; Clear: yes\n"
           "3: faithful=yes\n")
    out = parsers.verdicts(raw, False, ["checks"], criteria=["faithful", "relevant", "clear"])
    assert out.items == [
        {"index": 1, "checks": {"faithful": True, "relevant": True, "clear": False}},
        {"index": 2, "checks": {"faithful": False, "relevant": True, "clear": True}},
    ]


def test_refusal_detection():
    assert parsers.is_refusal("I'm sorry, but I can't help with that.")
    assert parsers.is_refusal("As an AI language model, I ...")
    assert not parsers.is_refusal("Sorry Harbour is a town on the island.")


def test_tagged_items_and_a_cut_off_one():
    raw = "<text>\nFirst one.\n</text>\n\n<text>Second\nline two.</text>\n<text>\nthird, cut"
    out = parsers.tagged(raw, True, ["context"], labels={"context": "text"})
    assert out.items == [{"context": "First one."}, {"context": "Second\nline two."}]
    assert out.problems == ["truncated: an item was cut off"]
    empty = parsers.tagged("Text:\nText:", False, ["context"], labels={"context": "text"})
    assert empty.items == [] and empty.problems == ["no <text>...</text> found"]
