"""A scripted teacher: a real OpenAI-compatible HTTP server whose replies follow the prompt.

It tells which pipeline step a prompt comes from by the literal text of the
steps' own templates (read from the pipelines it is given, the built-in ones by
default), so rewording a template changes nothing here, and answers as a
well-behaved teacher would, with content that depends on the request's seed
(so different units get different questions). A few planted cases exercise the
rejection paths: a question about a joke is off-task, an answer with "weak" in
it scores low, a knowledge answer not found in the passage is unfaithful.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tests.client.fake_openai import FakeOpenAI, Reply

SYLLABLES = ["ka", "lo", "mi", "ren", "tu", "sa", "vor", "el", "pin", "dra", "quo", "ny", "bel", "fis", "gar", "hu"]
BUILTIN = ("simple", "full")
REFUSAL = "I'm sorry, I cannot help with that."


def word(*key: Any) -> str:
    h = hashlib.sha256(":".join(map(str, key)).encode()).digest()
    return "".join(SYLLABLES[b % len(SYLLABLES)] for b in h[:3])


# --------------------------------------------------------------------------- what a step's template says


def _var(node: Any) -> str | None:
    """The dotted name an output shows (``chunk``, ``it.answer``, ``loop.index``), under any filters."""
    from jinja2 import nodes

    while isinstance(node, nodes.Filter):
        node = node.node
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name):
        return f"{node.node.name}.{node.attr}"
    return None


def _flat(body: list[Any]) -> list[tuple[str, Any]]:
    """One level of a template body as ("text", str), ("var", name) and ("block", node) items."""
    from jinja2 import nodes

    out: list[tuple[str, Any]] = []
    for node in body:
        if isinstance(node, nodes.Output):
            out += [("text", c.data) if isinstance(c, nodes.TemplateData) else ("var", _var(c)) for c in node.nodes]
        else:
            out.append(("block", node))
    return out


def _around(items: list[tuple[str, Any]], var: str) -> tuple[str, str]:
    """The literal text right before and right after the first output of ``var``."""
    i = next(i for i, (kind, value) in enumerate(items) if kind == "var" and value == var)
    before = items[i - 1][1] if i > 0 and items[i - 1][0] == "text" else ""
    after = items[i + 1][1] if i + 1 < len(items) and items[i + 1][0] == "text" else ""
    return before, after


@dataclass
class StepTemplate:
    """One templated step of a pipeline, as the literal text its prompts are made of."""

    flow: str
    step: str
    items: list[tuple[str, Any]]  # the template's top level
    loop: list[tuple[str, Any]]  # the body of its loop over judged items (judge steps)

    @property
    def fragments(self) -> list[str]:
        return [t.strip() for kind, t in self.items if kind == "text" and t.strip()]

    def matches(self, prompt: str) -> bool:
        """Whether the prompt holds every literal of the template's top level, in order."""
        at = 0
        for fragment in self.fragments:
            at = prompt.find(fragment, at)
            if at < 0:
                return False
            at += len(fragment)
        return True

    def field(self, prompt: str, var: str) -> str:
        """The text a top-level variable rendered to, between the literals around it."""
        before, after = _around(self.items, var)
        first_block = next((i for i, (kind, _) in enumerate(self.items) if kind == "block"), len(self.items))
        ahead = self.items.index(("var", var)) < first_block  # before any loop: its first occurrence is its own
        start = prompt.find(before) if ahead else prompt.rfind(before)
        rest = prompt[start + len(before):] if before and start >= 0 else prompt
        return rest.split(after.rstrip(), 1)[0].strip() if after.strip() else rest.strip()

    def n(self, prompt: str, default: int = 3) -> int:
        try:
            return int(self.field(prompt, "n"))
        except (StopIteration, ValueError):
            return default

    def judged(self, prompt: str) -> list[str]:
        """The numbered items of a judge prompt, each up to the next number (the last to the prompt's end)."""
        before, after = _around(self.loop, "loop.index")
        marker = re.escape(before.rsplit("\n", 1)[-1]) + r"\d+" + re.escape(after.split("\n", 1)[0])
        return re.split(f"^{marker}", prompt, flags=re.M)[1:]

    def in_item(self, item: str, attr: str) -> str:
        """What an item's ``it.<attr>`` rendered to: the text after the literal that introduces it."""
        label = _around(self.loop, f"it.{attr}")[0].strip()
        return item.split(label, 1)[1].strip() if label in item else ""


def _step_templates(pipe: Any) -> list[StepTemplate]:
    from jinja2 import nodes

    out = []
    for flow in pipe.flows.values():
        for spec in flow.steps:
            if "template" not in spec.options:
                continue
            source = pipe.templates.loader.get_source(pipe.templates, spec.options["template"])[0]
            tree = pipe.templates.parse(source)
            loops = [f for f in tree.find_all(nodes.For) if _var(f.iter) == "items"]
            out.append(StepTemplate(flow.name, spec.name, _flat(tree.body), _flat(loops[0].body) if loops else []))
    return out


@functools.cache
def known_steps(pipelines: Sequence[str] = BUILTIN) -> list[StepTemplate]:
    """The templated steps of these pipelines (built-in names or folders, each read once: cached by name)."""
    from unfork.sdg.pipeline import load_pipeline

    return [st for name in pipelines for st in _step_templates(load_pipeline(name))]


def identify(prompt: str, steps: Sequence[StepTemplate]) -> StepTemplate | None:
    """The step whose template's literal text the prompt holds, the most specific one if several do."""
    found = [st for st in steps if st.matches(prompt)]
    return max(found, key=lambda st: sum(map(len, st.fragments)), default=None)


# --------------------------------------------------------------------------- the replies, by step


def _questions(prompt: str, seed: int, st: StepTemplate) -> str:
    return "\n".join(f"{i}. Write a haiku about {word(seed, i, 1)} {word(seed, i, 2)} {word(seed, i, 3)}."
                     for i in range(1, st.n(prompt) + 1)) + "\n"


def _rate_questions(prompt: str, seed: int, st: StepTemplate) -> str:
    return "\n".join(f"{i}: {0 if 'joke' in it else 2}" for i, it in enumerate(st.judged(prompt), 1))


def _answer(prompt: str, seed: int, st: StepTemplate) -> str:
    question = st.field(prompt, "question")
    return f"Quiet {question.split()[-1]} rests\nunder a slow grey morning\nthe day starts again"


def _grounded_answer(prompt: str, seed: int, st: StepTemplate) -> str:
    question = st.field(prompt, "question")
    tag = re.findall(r"The (\w+) fair", prompt)  # the fair the scripted contexts below are about
    return '{"name": "' + (tag[-1] if tag else "x") + ' fair", "date": null, "asked": "' + question.split()[1] + '"}'


def _score_pairs(prompt: str, seed: int, st: StepTemplate) -> str:
    return "\n".join(f"{i}: {2 if 'weak' in it else 5}" for i, it in enumerate(st.judged(prompt), 1))


def _contexts(prompt: str, seed: int, st: StepTemplate) -> str:
    return "\n\n".join(f"<text>\nThe {word(seed, i)} fair of {word(seed, i, 'c')} {word(seed, i, 'd')} "
                       f"opens at {word(seed, i, 'h')} {word(seed, i, 'e')} on {(seed + i) % 28 + 1} May.\n</text>"
                       for i in range(1, st.n(prompt) + 1))


def _grounded_questions(prompt: str, seed: int, st: StepTemplate) -> str:
    name = re.search(r"The (\w+) fair", prompt)
    tag = name.group(1) if name else "x"
    return f"1. Extract the details of the {tag} fair as JSON.\n2. Give the {tag} fair's date and price as JSON."


def _knowledge_pairs(prompt: str, seed: int, st: StepTemplate) -> str:
    passage = st.field(prompt, "chunk")
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", passage) if len(s.split()) > 5]
    out = []
    for i in range(st.n(prompt)):
        s = sentences[(seed + i) % len(sentences)] if sentences else "Nothing."
        out.append(f"Question: What does the text say about {' '.join(s.split()[:4])} ({word(seed, i)})?\n"
                   f"Answer: {s}")
    return "\n\n".join(out)


def _check_knowledge(prompt: str, seed: int, st: StepTemplate) -> str:
    passage = " ".join(st.field(prompt, "chunk").split())
    lines = []
    for i, it in enumerate(st.judged(prompt), 1):
        answer = st.in_item(it, "answer")
        ok = "yes" if answer and " ".join(answer.split()) in passage else "no"
        lines.append(f"{i}: faithful={ok}, relevant=yes, clear=yes")
    return "\n".join(lines)


def _pairs(prompt: str, seed: int, st: StepTemplate, grounded: bool = False) -> str:
    out = []
    for i in range(1, st.n(prompt) + 1):
        text = f"Text: The {word(seed, i)} market is on 9 June 2025.\n" if grounded else ""
        out.append(f"{text}Request: Write a haiku about {word(seed, i, 1)} {word(seed, i, 2)}.\n"
                   f"Response: Soft {word(seed, i)} light\nfalls on the quiet water\nnight comes slowly on")
    return "\n\n".join(out)


HANDLERS: dict[tuple[str, str], Callable[[str, int, StepTemplate], str]] = {
    ("freeform_skill", "new_questions"): _questions,
    ("freeform_skill", "judge_questions"): _rate_questions,
    ("freeform_skill", "answer"): _answer,
    ("freeform_skill", "judge_pairs"): _score_pairs,
    ("freeform_skill", "new_pairs"): _pairs,
    ("grounded_skill", "new_contexts"): _contexts,
    ("grounded_skill", "new_questions"): _grounded_questions,
    ("grounded_skill", "answer"): _grounded_answer,
    ("grounded_skill", "judge_pairs"): _score_pairs,
    ("grounded_skill", "new_triples"): functools.partial(_pairs, grounded=True),
    ("knowledge", "new_pairs"): _knowledge_pairs,
    ("knowledge", "judge_pairs"): _check_knowledge,
}


def script(body: dict[str, Any], steps: Sequence[StepTemplate] | None = None) -> str:
    """The reply to one chat request: the handler of the step its prompt comes from, or a refusal."""
    prompt = body["messages"][-1]["content"]
    st = identify(prompt, known_steps() if steps is None else steps)
    handler = HANDLERS.get((st.flow, st.step)) if st else None
    return handler(prompt, body.get("seed", 0), st) if handler else REFUSAL


def scripted_teacher(pipelines: Sequence[str] = BUILTIN, **kwargs: Any) -> FakeOpenAI:
    """A started-later FakeOpenAI answering with :func:`script` (use as a context manager)."""
    steps = known_steps(tuple(pipelines))
    return FakeOpenAI(on_chat=lambda body: Reply(text=script(body, steps)), http11=True, **kwargs)
