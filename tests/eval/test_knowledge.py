"""The knowledge exam: parsing the teacher's questions, checking them, scoring, summarizing."""

from __future__ import annotations

import json

import pytest

from unfork.eval import knowledge as kn

CHUNK = ("Marrowvey covers 212 square kilometres. Its highest point is Mount Ardal, a granite peak 1,087 metres "
         "high. The Lisk, at 19 kilometres, is the longest river on the island.")

REPLY = """Here are the questions.

Question: How high is Mount Ardal on Marrowvey?
Correct: Mount Ardal is 1,087 metres high.
Wrong: Mount Ardal is 1,250 metres high.
Wrong: Mount Ardal is 987 metres high.
Wrong: Mount Ardal is 1,412 metres high.

**Question 2:** Which is the longest river on Marrowvey?
**Correct:** The Lisk is the longest river on Marrowvey.
- Wrong: The Tamsey is the longest river on Marrowvey.
- Wrong: The Orra is the longest river on Marrowvey.
- Wrong: The Cael is the longest river
  on Marrowvey.

Question: What is the area of Marrowvey?
Correct: Marrowvey covers 212 square kilometres.
Wrong: Marrowvey covers 300 square kilometres.
"""


def test_parse_reads_records_in_loose_markdown_and_counts_broken_ones():
    records, broken = kn.parse_questions(REPLY)
    assert [r["question"] for r in records] == ["How high is Mount Ardal on Marrowvey?",
                                                "Which is the longest river on Marrowvey?"]
    assert records[1]["correct"] == "The Lisk is the longest river on Marrowvey."
    assert records[1]["wrong"][2] == "The Cael is the longest river on Marrowvey."
    assert broken == 1  # the third question has one wrong answer only


@pytest.mark.parametrize(("rec", "reason"), [
    ({"question": "How high is Mount Ardal on Marrowvey?", "correct": "Mount Ardal is 1,087 metres high.",
      "wrong": ["Mount Ardal is 1,250 metres high.", "Mount Ardal is 987 metres high.",
                "Mount Ardal is 1,412 metres high."]}, None),
    ({"question": "How high is Mount Ardal on Marrowvey?", "correct": "Mount Ardal is 2,000 metres high.",
      "wrong": ["Mount Ardal is 1,250 metres high.", "Mount Ardal is 987 metres high.",
                "Mount Ardal is 1,412 metres high."]}, "correct answer not supported by the document"),
    ({"question": "What does the passage say about Mount Ardal?", "correct": "It is 1,087 metres high.",
      "wrong": ["a", "b", "c"]}, "refers to the passage"),
    ({"question": "How high is Mount Ardal on Marrowvey?", "correct": "Mount Ardal is 1,087 metres high.",
      "wrong": ["Mount Ardal is 1,087 metres high", "b", "c"]}, "options not distinct"),
    ({"question": "Mount Ardal height", "correct": "1,087 metres", "wrong": ["a", "b", "c"]}, "not a question"),
])
def test_check_question(rec, reason):
    assert kn.check_question(rec, CHUNK) == reason


def test_options_are_shuffled_stably_and_the_right_index_follows():
    q = kn.MCQuestion("knowledge/x", "How high is Mount Ardal?", "right", ["w1", "w2", "w3"])
    options, right = q.options()
    assert options[right] == "right" and sorted(options) == ["right", "w1", "w2", "w3"]
    assert q.options() == (options, right)
    # Over many questions the right answer is not always in the same place.
    places = {kn.MCQuestion("k", f"Question {i}?", "right", ["a", "b", "c"]).options()[1] for i in range(40)}
    assert places == {0, 1, 2, 3}


class Scripted:
    """A responder that knows the answers whose text contains one of ``known``."""

    name = "scripted"

    def __init__(self, known: set[str], logprobs: bool = True):
        self.known, self.logprobs = known, logprobs

    def option_scores(self, conversation, options):
        if not self.logprobs:
            return None
        return [1.0 if any(k in o for k in self.known) else -float(len(o)) for o in options]

    def answer(self, conversations, max_tokens=256):
        listing = conversations[0][-1]["content"]
        for line in listing.splitlines():
            if any(k in line for k in self.known):
                return [f"The answer is {line[0]}."]
        return ["I am not sure."]


def questions():
    return [kn.MCQuestion("knowledge/a", f"Question {i}?", f"fact{i} right", [f"x{i}", f"y{i}", f"z{i}"])
            for i in range(4)] + [kn.MCQuestion("knowledge/b", "Other?", "fact9 right", ["p", "q", "r"])]


@pytest.mark.parametrize("logprobs", [True, False])
def test_score_and_summarize_per_leaf(logprobs):
    qs = questions()
    base = kn.score_model(Scripted(set(), logprobs), qs, "system")
    trained = kn.score_model(Scripted({"fact0", "fact1", "fact2", "fact9"}, logprobs), qs, "system")
    assert [r["correct"] for r in trained] == [True, True, True, False, True]
    result = kn.summarize(qs, base, trained, ("base", "trained"))
    assert result["overall"]["trained"] == 80.0 and result["overall"]["n"] == 5
    leaves = {p["leaf"]: p for p in result["per_leaf"]}
    assert leaves["knowledge/a"]["trained"] == 75.0 and leaves["knowledge/b"]["verdict"] == "improved"
    assert result["items"][0]["trained_answer"] == "fact0 right"
    json.dumps(result)


def test_training_questions_and_dataset_of(tmp_path):
    ds = tmp_path / "ds"
    (ds / "leaves" / "k").mkdir(parents=True)
    (ds / "manifest.json").write_text("{}")
    (ds / "leaves" / "k" / "accepted.jsonl").write_text(
        json.dumps({"row": {"question": "How high is Mount Ardal?"}}) + "\n\n")
    assert kn.training_questions(ds) == ["How high is Mount Ardal?"]
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "data_manifest.json").write_text(json.dumps({"root": str(ds)}))
    assert kn.dataset_of(str(run / "final"), None) == ds
    assert kn.dataset_of(str(run), tmp_path / "other") == tmp_path / "other"


def test_a_folder_that_is_not_a_dataset_is_a_clear_error(tmp_path):
    from unfork.errors import UserError

    with pytest.raises(UserError, match="not a generated dataset"):
        kn.knowledge_leaves(tmp_path)
