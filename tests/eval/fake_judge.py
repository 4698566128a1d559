"""A scripted judge (a real OpenAI-compatible HTTP server) and scripted models that answer questions.

The judge grades by a simple rule a test can predict: an answer that contains
the reference answer gets 9, an answer with "partly" gets 5, any other 2. Two
planted answers exercise the unreadable-verdict paths: "MUMBLE" makes the
judge reply without a grade until it is reminded, "SILENT" never gives one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from tests.client.fake_openai import FakeOpenAI, Reply


def _between(prompt: str, tag: str) -> str:
    m = re.search(rf"\[{tag}\]\n(.*?)\n\[END OF {tag}\]", prompt, re.S)
    return m.group(1).strip() if m else ""


def judge_reply(body: dict[str, Any]) -> str:
    messages = body["messages"]
    first = next(m["content"] for m in messages if m["role"] == "user")
    answer, reference = _between(first, "ANSWER"), _between(first, "REFERENCE ANSWER")
    reminded = len([m for m in messages if m["role"] == "user"]) > 1
    if "Does the answer below state the same fact" in first:
        if "SILENT" in answer:
            return "I am not sure."
        return "Verdict: [[correct]]" if reference and reference.lower() in answer.lower() else "Verdict: [[incorrect]]"
    if "SILENT" in answer or ("MUMBLE" in answer and not reminded):
        return "The answer talks about several things and it is hard to say."
    grade = 9 if reference and reference.lower() in answer.lower() else 5 if "partly" in answer else 2
    return f"The answer was checked against the reference.\nRating: [[{grade}]]"


def fake_judge(**kwargs: Any) -> FakeOpenAI:
    """A FakeOpenAI that grades like :func:`judge_reply` (use as a context manager)."""
    return FakeOpenAI(on_chat=lambda body: Reply(text=judge_reply(body)), http11=True, model="fake-judge", **kwargs)


class ScriptedModel:
    """A responder: answers from a dict of question -> answer (default: a fixed sentence), records calls."""

    def __init__(self, name: str, answers: dict[str, str] | None = None, default: str = "I do not know."):
        self.name = name
        self.answers = answers or {}
        self.default = default
        self.calls: list[list[list[dict[str, str]]]] = []

    def answer(self, conversations: Sequence[list[dict[str, str]]], *, max_tokens: int = 256) -> list[str]:
        self.calls.append(list(conversations))
        return [self.answers.get(c[-1]["content"], self.default) for c in conversations]

    def option_scores(self, conversation: list[dict[str, str]], options: Sequence[str]) -> None:
        return None


# --------------------------------------------------------------------------- a dataset and a trained run on disk

SYSTEM = "You are a helpful, accurate assistant."
SKILLS = [("compositional_skills/writing/haiku", "Write a haiku about rain.", "Rain on the roof"),
          ("compositional_skills/writing/haiku", "Write a haiku about snow.", "Snow on the hill"),
          ("compositional_skills/extraction/dates", "When is the fair? Text: The fair is on 9 May.", "9 May")]
KNOWLEDGE = [("knowledge/geography/marrowvey", "Where is Marrowvey?", "In the North Sea")]


def _line(leaf: str, question: str, answer: str, kind: str) -> str:
    import json

    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question},
                {"role": "assistant", "content": answer}]
    return json.dumps({"messages": messages, "metadata": {"leaf": leaf, "kind": kind, "format": "seed"}})


def make_dataset(folder: Any) -> Any:
    """A dataset folder as 'unfork data generate' writes it (only the files evaluation reads)."""
    import json
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test_skills.jsonl").write_text("".join(_line(*s, "skill") + "\n" for s in SKILLS))
    (folder / "test_knowledge.jsonl").write_text("".join(_line(*k, "knowledge") + "\n" for k in KNOWLEDGE))
    (folder / "train_all.jsonl").write_text(_line(*SKILLS[0], "skill") + "\n")
    (folder / "manifest.json").write_text(json.dumps({"format": "unfork-sdg-1", "pipeline": {"mix": {}}}))
    return folder


def make_run(checkpoints: Any, name: str, dataset: Any, base: str = "/models/base-hf") -> Any:
    """A trained run folder: training.json naming the base, data_manifest.json naming the dataset, final/."""
    import json
    from pathlib import Path

    run = Path(checkpoints) / name
    (run / "final").mkdir(parents=True)
    (run / "training.json").write_text(json.dumps({"settings": {"model": base, "model_name": "base"}}))
    (run / "data_manifest.json").write_text(json.dumps({"root": str(dataset), "files": {}}))
    return run


def good_and_bad_models() -> tuple[ScriptedModel, ScriptedModel]:
    """A base that knows nothing and a trained model that gives the seed answers (but forgets one leaf)."""
    trained = {q: f"Here it is: {a}." for _, q, a in SKILLS + KNOWLEDGE}
    trained["When is the fair? Text: The fair is on 9 May."] = "MUMBLE"
    base = {"When is the fair? Text: The fair is on 9 May.": "It is on 9 May."}
    return ScriptedModel("base-model", base), ScriptedModel("trained-model", trained)
