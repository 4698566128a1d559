"""A scripted teacher: a real OpenAI-compatible HTTP server whose replies follow the prompt.

It recognises the built-in pipelines' prompts by a phrase and answers as a
well-behaved teacher would, with content that depends on the request's seed
(so different units get different questions). A few planted cases exercise the
rejection paths: a question about a joke is off-task, an answer with "weak" in
it scores low, a knowledge answer not found in the passage is unfaithful.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from tests.client.fake_openai import FakeOpenAI, Reply

SYLLABLES = ["ka", "lo", "mi", "ren", "tu", "sa", "vor", "el", "pin", "dra", "quo", "ny", "bel", "fis", "gar", "hu"]


def word(*key: Any) -> str:
    h = hashlib.sha256(":".join(map(str, key)).encode()).digest()
    return "".join(SYLLABLES[b % len(SYLLABLES)] for b in h[:3])


def items_in(prompt: str) -> int:
    return max(len(re.findall(r"^\[(\d+)\]", prompt, re.M)), len(re.findall(r"^(\d+)\. ", prompt, re.M)))


def judge_items(prompt: str) -> list[str]:
    parts = re.split(r"^(?:\[\d+\]|\d+\.) ", prompt, flags=re.M)[1:]
    return parts


def _n(prompt: str) -> int:
    m = re.search(r"Write (\d+) ", prompt)
    return int(m.group(1)) if m else 3


def script(body: dict[str, Any]) -> str:
    prompt = body["messages"][-1]["content"]
    seed = body.get("seed", 0)
    n = _n(prompt)
    if "new requests of the same kind" in prompt:
        return "\n".join(f"{i}. Write a haiku about {word(seed, i, 1)} {word(seed, i, 2)} {word(seed, i, 3)}."
                         for i in range(1, n + 1)) + "\n"
    if prompt.startswith("Task:") and "Rate each numbered request" in prompt:
        return "\n".join(f"{i}: {0 if 'joke' in it else 2}" for i, it in enumerate(judge_items(prompt), 1))
    if "Respond to the next request" in prompt:
        question = prompt.rsplit("Request:", 1)[1].strip()
        if "Text:" in prompt:
            tag = re.findall(r"The (\w+) fair", prompt)
            return '{"name": "' + (tag[-1] if tag else "x") + ' fair", "date": null, "asked": "' + question.split()[1] + '"}'
        return f"Quiet {question.split()[-1]} rests\nunder a slow grey morning\nthe day starts again"
    if "Score each numbered request and response" in prompt:
        return "\n".join(f"{i}: {2 if 'weak' in it else 5}" for i, it in enumerate(judge_items(prompt), 1))
    if "new input texts of the same kind" in prompt:
        return "\n\n".join(f"<text>\nThe {word(seed, i)} fair of {word(seed, i, 'c')} {word(seed, i, 'd')} "
                           f"opens at {word(seed, i, 'h')} {word(seed, i, 'e')} on {(seed + i) % 28 + 1} May.\n</text>"
                           for i in range(1, n + 1))
    if "can be answered from the input text" in prompt:
        name = re.search(r"The (\w+) fair", prompt)
        tag = name.group(1) if name else "x"
        return f"1. Extract the details of the {tag} fair as JSON.\n2. Give the {tag} fair's date and price as JSON."
    if "new pairs about facts stated in the passage" in prompt:
        passage = prompt.split("Passage:", 1)[1].split("\n\nYou write question", 1)[0]
        sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", passage) if len(s.split()) > 5]
        out = []
        for i in range(n):
            s = sentences[(seed + i) % len(sentences)] if sentences else "Nothing."
            out.append(f"Question: What does the text say about {' '.join(s.split()[:4])} ({word(seed, i)})?\n"
                       f"Answer: {s}")
        return "\n\n".join(out)
    if "Check each numbered question and answer" in prompt:
        passage = prompt.split("Passage:", 1)[1].split("Check each", 1)[0]
        lines = []
        for i, it in enumerate(judge_items(prompt), 1):
            answer = it.split("Answer:", 1)[1].strip() if "Answer:" in it else ""
            ok = "yes" if answer and " ".join(answer.split()) in " ".join(passage.split()) else "no"
            lines.append(f"{i}: faithful={ok}, relevant=yes, clear=yes")
        return "\n".join(lines)
    if "new examples for the same task" in prompt:
        out = []
        for i in range(1, n + 1):
            text = f"Text: The {word(seed, i)} market is on 9 June 2025.\n" if "Text:" in prompt else ""
            out.append(f"{text}Request: Write a haiku about {word(seed, i, 1)} {word(seed, i, 2)}.\n"
                       f"Response: Soft {word(seed, i)} light\nfalls on the quiet water\nnight comes slowly on")
        return "\n\n".join(out)
    return "I'm sorry, I cannot help with that."


def scripted_teacher(**kwargs: Any) -> FakeOpenAI:
    """A started-later FakeOpenAI answering with :func:`script` (use as a context manager)."""
    return FakeOpenAI(on_chat=lambda body: Reply(text=script(body)), http11=True, **kwargs)
