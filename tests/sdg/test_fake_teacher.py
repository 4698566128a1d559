"""The scripted teacher knows a prompt's step from its pipeline's templates, not from copied phrases."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.sdg.fake_teacher import HANDLERS, REFUSAL, identify, known_steps, script
from unfork.sdg.pipeline import BUILTIN_DIR, load_pipeline

PASSAGE = ("Marrowvey is an island in the North Sea with about 4,200 people. Its capital is Lindle Port, "
           "a harbour town on the east coast. The Glasslight Festival is held there every August.")
VALUES = {
    "task_description": "Write a haiku about the subject given.",
    "domain": "geography",
    "examples": [
        {"question": "Write a haiku about rain.", "answer": "Rain on the roof", "context": "The fair is on 9 May."},
        {"question": "Write a haiku about snow.", "answer": "Snow on the hill", "context": "The fair is on 3 May."}],
    "context": "The milopin fair of kalo sa opens at ren tu on 4 May.",
    "question": "Extract the details of the milopin fair as JSON.",
    "chunk": PASSAGE,
    "n": 4,
    "items": [
        {"question": "Where is Marrowvey?", "answer": "Marrowvey is an island in the North Sea with about 4,200 people."},
        {"question": "Tell me a joke about weak tea.", "answer": "A weak joke."},
        {"question": "What is the capital?", "answer": "Its capital is Lindle Port, a harbour town on the east coast."}],
}


def prompts(folder: str) -> dict[tuple[str, str], str]:
    """Each templated step's prompt, rendered from ``VALUES`` as the step itself renders it."""
    pipe = load_pipeline(folder)
    out = {}
    for flow in pipe.flows.values():
        for spec in flow.steps:
            if "template" in spec.options:
                text = pipe.templates.get_template(spec.options["template"]).render(**VALUES).strip()
                out[(flow.name, spec.name)] = text
    return out


def body(prompt: str, seed: int = 7) -> dict:
    return {"messages": [{"role": "system", "content": "You write training data."},
                         {"role": "user", "content": prompt}], "seed": seed}


@pytest.mark.parametrize("pipeline", ["simple", "full"])
def test_every_templated_step_of_a_built_in_pipeline_is_recognised_and_answered(pipeline):
    for (flow, step), prompt in prompts(pipeline).items():
        found = identify(prompt, known_steps())
        assert found and (found.flow, found.step) == (flow, step), (flow, step)
        assert (flow, step) in HANDLERS
        assert script(body(prompt)) != REFUSAL


def test_the_replies_use_what_the_prompt_holds():
    full = prompts("full")
    assert script(body(full["freeform_skill", "new_questions"])).count("Write a haiku about") == 4  # n
    assert script(body(full["freeform_skill", "judge_questions"])) == "1: 2\n2: 0\n3: 2"  # the joke is off-task
    assert script(body(full["freeform_skill", "judge_pairs"])) == "1: 5\n2: 2\n3: 5"  # the weak answer scores low
    assert script(body(full["freeform_skill", "answer"])).startswith("Quiet JSON. rests")  # the last word asked
    assert json.loads(script(body(full["grounded_skill", "answer"]))) == {
        "name": "milopin fair", "date": None, "asked": "the"}
    checks = script(body(full["knowledge", "judge_pairs"])).splitlines()
    assert checks[:2] == ["1: faithful=yes, relevant=yes, clear=yes", "2: faithful=no, relevant=yes, clear=yes"]
    pairs = script(body(full["knowledge", "new_pairs"])).split("\n\n")
    assert len(pairs) == 4 and all(p.split("Answer: ", 1)[1] in PASSAGE for p in pairs)
    assert script(body("Tell me about the weather.")) == REFUSAL


REWORDED = [
    ("full", "freeform_questions.j2", "Write {{ n }} new requests of the same kind: instructions a user would give",
     "Come up with {{ n }} further requests like these, as a user would phrase them"),
    ("full", "judge_questions.j2", "Rate each numbered request:", "Give every request below a number:"),
    ("full", "freeform_answer.j2", "Respond to the next request the way the examples do.",
     "Now answer this last request in the style shown."),
    ("full", "grounded_contexts.j2", "Write {{ n }} new input texts of the same kind and length.",
     "Make up {{ n }} more input texts like these."),
    ("full", "knowledge_pairs.j2", "You write question and answer pairs that teach the facts of the passage above",
     "Turn the passage above into training questions"),
    ("full", "judge_knowledge.j2", "Check each numbered question and answer against the passage:",
     "Compare every pair below with what the passage says:"),
    ("simple", "grounded_triples.j2", "Write {{ n }} new examples for the same task,", "Invent {{ n }} examples more,"),
]


@pytest.mark.parametrize(("pipeline", "template", "sentence", "reworded"), REWORDED,
                         ids=[f"{p}/{t}" for p, t, *_ in REWORDED])
def test_a_reworded_template_gets_the_same_replies(tmp_path, pipeline, template, sentence, reworded):
    folder = tmp_path / pipeline
    shutil.copytree(BUILTIN_DIR / pipeline, folder)
    source = (folder / template).read_text()
    assert sentence in source
    (folder / template).write_text(source.replace(sentence, reworded))
    before, after = prompts(pipeline), prompts(str(folder))
    changed = [key for key in before if before[key] != after[key]]
    assert changed
    steps = known_steps((str(folder),))
    for key in changed:
        assert script(body(after[key]), steps) == script(body(before[key])) != REFUSAL, key
