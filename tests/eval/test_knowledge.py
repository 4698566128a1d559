"""The knowledge exam: parsing the teacher's questions, checking them, scoring, summarizing."""

from __future__ import annotations

import json
import re

import pytest

from unfork.eval import knowledge as kn

CHUNK = ("Marrowvey covers 212 square kilometres. Its highest point is Mount Ardal, a granite peak 1,087 metres "
         "high. The Lisk, at 19 kilometres, is the longest river on the island.")

DOCUMENT = CHUNK + (" Orra Water is a lake of 4.6 square kilometres near Cael Harbour. Port Sorrel has 6,310 people."
                   " The Tamsey joins the sea at Cael Harbour, and Kestle Rock lies off Gull Point.")

REPLY = """Here are the questions.

**Question 1:** How high is Mount Ardal on Marrowvey?
**Answer:** Mount Ardal is 1,087 metres high.

Question: Which river is the longest on the island of Marrowvey?
Answer: The longest river is the Lisk.

Question: How many people live on Marrowvey?
Answer: About 9,999 people live there.
"""


def test_pairs_become_questions_whose_wrong_options_swap_the_fact_for_one_of_the_document():
    pairs = kn.parse_pairs(REPLY)
    assert len(pairs) == 3
    made = [kn.make_question(p, CHUNK, DOCUMENT) for p in pairs]
    height, reason = made[0]
    assert reason == "" and height["correct"] == "Mount Ardal is 1,087 metres high."
    assert len(height["wrong"]) == 3 and all(w.startswith("Mount Ardal is ") and "1,087" not in w
                                             for w in height["wrong"])
    assert all(re.search(r"\d,\d{3} metres", w) for w in height["wrong"])  # numbers of the same shape
    river, _ = made[1]
    assert {w.removeprefix("The longest river is the ").rstrip(".") for w in river["wrong"]} <= {
        "Tamsey", "Orra Water", "Cael Harbour", "Kestle Rock", "Gull Point", "Port Sorrel", "Marrowvey"}
    assert made[2] == (None, "answer not supported by the document")  # 9,999 is not in the chunk


@pytest.mark.parametrize(("pair", "reason"), [
    ({"question": "What does the passage say about Mount Ardal?", "answer": "It is 1,087 metres high."},
     "refers to the passage"),
    ({"question": "Mount Ardal height", "answer": "1,087 metres"}, "not a question"),
    ({"question": "Is Mount Ardal a granite peak?", "answer": "yes, it is granite."}, "no checkable fact"),
])
def test_unfit_pairs_are_dropped_with_a_reason(pair, reason):
    assert kn.make_question(pair, CHUNK, DOCUMENT) == (None, reason)


def test_a_fact_from_another_sentence_than_the_one_asked_about_is_dropped():
    chunk = ("Marrowvey was first settled around 640. The Marine Institute was founded in 1988 by\n"
             "Dr. Ilse Varn. Exactly 1,847 lanterns line the harbour wall on the festival's opening night.")
    wrong_year = {"question": "In what year was Marrowvey Island first settled?", "answer": "It was settled in 1988."}
    assert kn.make_question(wrong_year, chunk, DOCUMENT + " " + chunk) == (
        None, "no sentence states the fact about what is asked")
    assert kn.fact_fits_question("640", wrong_year["question"], chunk)
    # "1847" is not "1,847" read differently, and 1988 is found across the wrapped line
    assert kn.fact_fits_question("1847", "How many lanterns line the harbour wall?", chunk)
    assert kn.fact_fits_question("1988", "When was the Marine Institute founded?", chunk)
    assert not kn.fact_fits_question("18", "How many lanterns line the harbour wall?", chunk)
    # the contributor's own seed examples are trusted
    seed = {"question": "In what year was Marrowvey Island first settled?", "answer": "It was settled in 1988."}
    assert kn.make_question(seed, DOCUMENT + " " + chunk, DOCUMENT + " " + chunk, trusted=True)[1] != \
        "no sentence states the fact about what is asked"


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


def test_training_questions_and_the_dataset_a_trained_model_came_from(tmp_path):
    from unfork.eval.compare import dataset_for, run_of

    ds = tmp_path / "ds"
    (ds / "leaves" / "k").mkdir(parents=True)
    (ds / "manifest.json").write_text("{}")
    (ds / "test_knowledge.jsonl").write_text("{}\n")
    (ds / "leaves" / "k" / "accepted.jsonl").write_text(
        json.dumps({"row": {"question": "How high is Mount Ardal?"}}) + "\n\n")
    assert kn.training_questions(ds) == ["How high is Mount Ardal?"]
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "training.json").write_text("{}")
    (run / "data_manifest.json").write_text(json.dumps({"root": str(ds)}))
    (tmp_path / "other").mkdir()
    # run_knowledge finds its dataset this way: the one the run recorded, unless --data-path says otherwise.
    assert dataset_for(run_of(str(run / "final")), None) == ds
    assert dataset_for(run_of(str(run)), tmp_path / "other") == tmp_path / "other"


def test_a_folder_that_is_not_a_dataset_is_a_clear_error(tmp_path):
    from unfork.errors import UserError

    with pytest.raises(UserError, match="not a generated dataset"):
        kn.knowledge_leaves(tmp_path)
