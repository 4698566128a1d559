"""The general benchmark: bundled questions, MMLU-format CSV folders, scoring, the lm-eval path."""

from __future__ import annotations

import contextlib
import json
from collections import Counter

import pytest

from tests.conftest import REAL_MODELS_DIR, missing
from unfork.errors import MissingExtraError, UserError
from unfork.eval import general
from unfork.eval.general import bundled_questions, parse_letter, read_mmlu_folder, run_general


class FakeResponder:
    """Prefers the right option for the subjects it 'knows', the first option otherwise."""

    def __init__(self, name: str, knows: set[str], by_letter: bool = False):
        self.name, self.knows, self.by_letter = name, knows, by_letter
        self.key = {q.question: q for q in bundled_questions()}
        self.asked: list = []

    def option_scores(self, conversation, options):
        if self.by_letter:
            return None
        q = self.key[conversation[-1]["content"]]
        right = q.answer if q.subject in self.knows else 0
        return [1.0 if i == right else -1.0 for i in range(len(options))]

    def answer(self, conversations, *, max_tokens=256):
        self.asked += conversations
        out = []
        for c in conversations:
            q = self.key[c[-1]["content"].split("\n\n")[0]]
            out.append("ABCD"[q.answer] + "." if q.subject in self.knows else "I do not know.")
        return out


def opener(models: dict):
    @contextlib.contextmanager
    def open_(name):
        yield models[name]
    return open_


def test_bundled_questions_are_fair():
    qs = bundled_questions()
    assert 50 <= len(qs) <= 80
    subjects = Counter(q.subject for q in qs)
    assert set(subjects) == {"geography", "science", "arithmetic", "language", "history", "everyday reasoning"}
    assert min(subjects.values()) >= 8
    for q in qs:
        assert general.check_question(q) is None, q
        assert len({c.casefold() for c in q.choices}) == 4 and 0 <= q.answer < 4
    assert len({q.question for q in qs}) == len(qs)
    # The right answer is spread over A-D, so a model that always says "A" scores about chance.
    assert max(Counter(q.answer for q in qs).values()) <= len(qs) * 0.3


def expected(knows: set[str]) -> float:
    qs = bundled_questions()
    return round(100.0 * sum(q.subject in knows or q.answer == 0 for q in qs) / len(qs), 1)


def test_run_general_scores_per_subject_and_overall(tmp_path):
    base = FakeResponder("base", {"geography"})
    trained = FakeResponder("trained", {"geography", "science"})
    result = run_general("t", "b", open_model=opener({"b": base, "t": trained}), output_dir=tmp_path, echo=lambda s: None)
    assert result["benchmark"] == "general" and result["metric"] == "accuracy"
    assert result["models"] == {"base": "base", "trained": "trained"}
    per = {row["leaf"]: row for row in result["per_leaf"]}
    assert per["geography"]["base"] == per["geography"]["trained"] == 100.0
    assert per["geography"]["verdict"] == "same"
    assert per["science"]["trained"] == 100.0 and per["science"]["verdict"] == "improved"
    # Where it does not know, it picks the first option: right only when the answer is A.
    science = [q for q in bundled_questions() if q.subject == "science"]
    assert per["science"]["base"] == round(100.0 * sum(q.answer == 0 for q in science) / len(science), 1)
    assert result["overall"]["base"] == expected({"geography"})
    assert result["overall"]["trained"] == expected({"geography", "science"})
    assert result["overall"]["delta"] == round(result["overall"]["trained"] - result["overall"]["base"], 1)
    assert result["overall"]["n"] == len(result["items"]) == 60
    item = result["items"][0]
    assert item["reference"] == "Paris" and item["base_answer"] == "Paris" and item["base_score"] == 1
    saved = json.loads((tmp_path / "general.json").read_text())
    assert saved["overall"] == result["overall"]


def test_endpoint_models_answer_by_letter():
    base = FakeResponder("base", set(), by_letter=True)
    trained = FakeResponder("trained", {"history"}, by_letter=True)
    result = run_general("t", "b", open_model=opener({"b": base, "t": trained}), limit=2, echo=lambda s: None)
    assert result["overall"]["n"] == 12  # two per subject
    per = {row["leaf"]: row for row in result["per_leaf"]}
    assert per["history"]["trained"] == 100.0 and per["history"]["base"] == 0.0
    assert result["unparsed"] == {"base": 12, "trained": 10}
    assert "A. " in trained.asked[0][-1]["content"] and "letter" in trained.asked[0][-1]["content"]


@pytest.mark.parametrize(("reply", "want"), [
    ("B", 1), ("(C)", 2), ("D. Mars", 3), ("The answer is C.", 2), ("Answer: a", 0),
    ("A lot of people think so", None), ("Mars", 0), ("I am not sure", None),
])
def test_parse_letter(reply, want):
    assert parse_letter(reply, ["Mars", "Venus", "Jupiter", "Saturn"]) == want


def write_csv(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_local_mmlu_csv_folder(tmp_path):
    write_csv(tmp_path / "test" / "astronomy_test.csv",
              '"Which planet is red?",Mars,Venus,Jupiter,Saturn,A\n"What orbits Earth?",The Sun,The Moon,Mars,Venus,B\n')
    write_csv(tmp_path / "test" / "world_capitals_test.csv",
              "question,A,B,C,D,answer\nCapital of Peru?,Quito,Lima,Bogota,Santiago,B\n")
    write_csv(tmp_path / "dev" / "astronomy_dev.csv", "Ignored?,a,b,c,d,A\n")  # MMLU's test/ wins when present
    qs = read_mmlu_folder(tmp_path)
    assert [(q.subject, q.answer) for q in qs] == [("astronomy", 0), ("astronomy", 1), ("world capitals", 1)]

    class Knows:
        name = "m"

        def option_scores(self, conversation, options):
            right = {q.question: q.answer for q in qs}[conversation[-1]["content"]]
            return [float(i == right) for i in range(4)]

    class Guesses:
        name = "g"

        def option_scores(self, conversation, options):
            return [0.0, 0.0, 0.0, 1.0]

    result = run_general("t", "b", tasks_path=tmp_path, open_model=opener({"b": Guesses(), "t": Knows()}),
                         echo=lambda s: None)
    assert result["overall"] == {"base": 0.0, "trained": 100.0, "delta": 100.0, "n": 3}
    assert [row["leaf"] for row in result["per_leaf"]] == ["astronomy", "world capitals"]


def test_bad_csv_row_is_a_user_error(tmp_path):
    write_csv(tmp_path / "x_test.csv", "Q?,a,b,c,d,E\n")
    with pytest.raises(UserError, match="answer A-D"):
        read_mmlu_folder(tmp_path)
    write_csv(tmp_path / "x_test.csv", "Q?,a,a,c,d,A\n")
    with pytest.raises(UserError, match="not distinct"):
        read_mmlu_folder(tmp_path)


def test_harness_tasks_need_lm_eval(tmp_path, monkeypatch):
    (tmp_path / "mmlu_local.yaml").write_text("task: mmlu_local\ndataset_path: ./data\noutput_type: multiple_choice\n")
    assert general.harness_tasks(tmp_path) == ["mmlu_local"]
    monkeypatch.setitem(__import__("sys").modules, "lm_eval", None)  # not installed, even where it is
    with pytest.raises(MissingExtraError) as err:
        run_general("t", "b", tasks_path=tmp_path, echo=lambda s: None)
    assert "pip install 'unfork[eval]'" in str(err.value)


def test_missing_tasks_folder(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        run_general("t", "b", tasks_path=tmp_path / "nope", echo=lambda s: None)


@pytest.mark.slow
def test_real_student_against_itself():
    folder = REAL_MODELS_DIR / "smollm2-135m-instruct-hf"
    if not (folder / "config.json").is_file():
        missing("the SmolLM2 Hugging Face folder is missing: run 'unfork model convert smollm2-135m-instruct --to hf'")
    result = run_general(str(folder), str(folder), limit=2, echo=lambda s: None)
    assert result["overall"]["n"] == 12
    assert result["overall"]["base"] == result["overall"]["trained"]
    assert all(row["verdict"] == "same" for row in result["per_leaf"])
    assert [i["base_answer"] for i in result["items"]] == [i["trained_answer"] for i in result["items"]]
