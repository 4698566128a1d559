"""Steps on their own: sampling, filters, near-duplicates, chunks, judges with a scripted ``ask``."""

from __future__ import annotations

import asyncio
import random

import pytest

from unfork.documents.convert import Document
from unfork.sdg.pipeline import load_pipeline
from unfork.sdg.steps import (
    ChunkStep,
    DedupStep,
    FilterStep,
    JudgeStep,
    LLMStep,
    Reply,
    SampleStep,
    StepSpec,
    Unit,
)

SEEDS = [{"question": f"Seed question number {i}?", "answer": f"Seed answer {i}."} for i in range(5)]
LEAF = {"seed_examples": SEEDS, "task_description": "Answer questions.", "leaf": "x"}


def unit(ask=None, index=0, leaf=LEAF):
    async def never(*a, **k):
        raise AssertionError("no teacher call expected")
    return Unit(index, random.Random(index), leaf, ask or never, 1000)


def run(step, rows, u=None):
    return asyncio.run(step.run(rows, u or unit()))


def test_sample_first_k_keeps_prompts_stable_and_shuffle_varies():
    first = SampleStep(StepSpec("s", "sample", ["seed_examples"], ["examples"], {"k": 2}))
    kept, _ = run(first, [{}])
    assert kept == [{"examples": SEEDS[:2]}]
    shuffled = SampleStep(StepSpec("s", "sample", ["seed_examples"], ["examples"], {"k": 3, "shuffle": True}))
    picks = {tuple(e["question"] for e in run(shuffled, [{}], unit(index=i))[0][0]["examples"]) for i in range(6)}
    assert len(picks) > 1


def test_filter_reasons():
    step = FilterStep(StepSpec("f", "filter", ["question"], [], {"min_words": 3, "max_words": 8}))
    step.prepare(LEAF, None)
    rows = [{"question": "Too short"}, {"question": "This one is fine to keep."},
            {"question": "I'm sorry, I cannot write questions today."}, {"question": "Seed question number 3?"},
            {"question": "one two three four five six seven eight nine"}]
    kept, rejected = run(step, rows)
    assert kept == [rows[1]]
    assert [r["reason"] for r in rejected] == ["question too short (2 words)", "question is a refusal",
                                               "question copies a seed example", "question too long (9 words)"]


def test_dedup_against_seeds_earlier_rows_and_primed_rows():
    step = DedupStep(StepSpec("d", "dedup", ["question"], [], {"threshold": 0.7}))
    step.prepare(LEAF, None)
    step.prime([{"question": "Where does the river Lisk meet the sea?"}])
    rows = [{"question": "Seed question number 4"}, {"question": "How long is the river Lisk?"},
            {"question": "How long is the river Lisk, exactly?"}, {"question": "Where does the Lisk meet the sea?"}]
    kept, rejected = run(step, rows)
    assert kept == [rows[1]]
    assert [r["row"]["question"] for r in rejected] == [rows[0]["question"], rows[2]["question"],
                                                         rows[3]["question"]]
    assert {r["reason"] for r in rejected} == {"near-duplicate (rouge_l ≥ 0.70)"}
    assert all(0.7 <= r["row"]["similarity"] <= 1 for r in rejected)



def test_dedup_can_leave_out_the_words_of_the_seed_requests_template():
    leaf = {"seed_examples": [{"question": f"Write a haiku about {s}."} for s in
                              ("a lighthouse in the fog", "autumn leaves", "a city at night", "the sea")]}
    rows = [{"question": "Write a haiku about a sunset."}, {"question": "Write a haiku about a river."},
            {"question": "Write a haiku about A SUNSET!"}]
    plain = DedupStep(StepSpec("d", "dedup", ["question"], [], {}))
    plain.prepare(leaf, None)
    # "... about a sunset" is 71% like the seed "... about a city at night", 83% like "... about a river"
    assert [len(x) for x in run(plain, rows)] == [0, 3]
    templated = DedupStep(StepSpec("d", "dedup", ["question"], [], {"ignore_seed_words": 0.8}))
    templated.prepare(leaf, None)
    kept, rejected = run(templated, rows)
    assert kept == rows[:2] and rejected[0]["row"]["duplicate_of"] == "Write a haiku about a sunset."

def test_chunk_step_spreads_units_over_chunks_and_fits_the_window():
    text = "\n\n".join(f"Paragraph {i}. " + "word " * 120 for i in range(6))
    step = ChunkStep(StepSpec("c", "chunk", ["documents"], ["chunk", "chunk_source"], {"max_tokens": 300}))
    step.prepare({"documents": [Document("doc.md", text)]}, context_window=1100)
    assert step.budget == 200  # 1100 - prompt_reserve 900
    assert len(step.chunks) > 3 and all(c.tokens <= 200 for c in step.chunks)
    got = [run(step, [{}], unit(index=i))[0][0] for i in range(len(step.chunks) + 1)]
    assert got[0]["chunk"] == step.chunks[0].text and got[-1]["chunk"] == step.chunks[0].text
    assert got[1] == {"chunk": step.chunks[1].text, "chunk_source": "doc.md"}
    with pytest.raises(Exception, match="no text"):
        step.prepare({"documents": [Document("empty.md", "  \n")]}, None)


def scripted(replies):
    calls = []

    async def ask(messages, **params):
        calls.append((messages, params))
        return replies.pop(0)
    return ask, calls


def test_llm_step_fans_out_and_keeps_the_trace():
    pipe = load_pipeline("full")
    step = pipe.build_steps("freeform_skill")[1]
    assert isinstance(step, LLMStep)
    ask, calls = scripted([Reply("1. First new one?\n2. Second new one?", "stop", "k1")])
    kept, rejected = run(step, [{"examples": SEEDS[:1]}], unit(ask))
    assert [r["question"] for r in kept] == ["First new one?", "Second new one?"]
    assert all(r["_trace"] == ["k1"] for r in kept) and rejected == []
    assert calls[0][1] == {"temperature": 1.0, "max_tokens": 320, "seed": 1000}
    assert "- Seed question number 0?" in calls[0][0][-1]["content"]


def test_llm_step_truncated_reply_keeps_complete_items_and_rejects_the_cut_one():
    step = load_pipeline("full").build_steps("freeform_skill")[1]
    ask, _ = scripted([Reply("1. Complete question here?\n2. Cut off in the mid", "length", "k")])
    kept, rejected = run(step, [{"examples": SEEDS}], unit(ask))
    assert [r["question"] for r in kept] == ["Complete question here?"]
    assert [r["reason"] for r in rejected] == ["unparseable: truncated: the last item was cut off by the token limit"]


def test_judge_batches_missing_verdicts_and_shared_columns():
    spec = StepSpec("j", "judge", ["chunk", "question", "answer"], ["checks"],
                    {"template": "judge_knowledge.j2", "parser": "verdicts", "batch": 2, "shared": ["chunk"],
                     "criteria": ["faithful", "relevant", "clear"]})
    step = JudgeStep(spec, load_pipeline("full").templates)
    rows = [{"chunk": "A", "question": f"q{i}", "answer": f"a{i}"} for i in range(3)] + \
           [{"chunk": "B", "question": "q3", "answer": "a3"}]
    ask, calls = scripted([
        Reply("1: faithful=yes, relevant=yes, clear=yes\n2: faithful=no, relevant=yes, clear=yes", "stop", "j1"),
        Reply("nothing useful", "stop", "j2"),
        Reply("1: faithful=yes, relevant=yes, clear=yes", "stop", "j3")])
    kept, rejected = run(step, rows, unit(ask))
    assert len(calls) == 3  # chunk A: 2 + 1 rows, chunk B: 1 row
    prompts = [c[0][-1]["content"] for c in calls]
    assert prompts[0].startswith("Passage:\nA\n") and prompts[2].startswith("Passage:\nB\n")
    assert [r["question"] for r in kept] == ["q0", "q3"]
    assert kept[0]["checks"] == {"faithful": True, "relevant": True, "clear": True}
    assert [(r["row"]["question"], r["reason"]) for r in rejected] == [
        ("q1", "below threshold (faithful=no, relevant=yes, clear=yes)"),
        ("q2", "judge gave no verdict for this item")]
    assert rejected[1]["raw"] == "nothing useful"


def test_teacher_errors_reject_every_row_of_the_request():
    step = load_pipeline("full").build_steps("freeform_skill")[4]
    assert isinstance(step, JudgeStep)
    ask, _ = scripted([Reply(key="k", error="teacher error: 503")])
    kept, rejected = run(step, [{"question": "a b c"}, {"question": "d e f"}], unit(ask))
    assert kept == [] and [r["reason"] for r in rejected] == ["teacher error: 503"] * 2


def test_a_chunk_too_long_for_the_teacher_is_cut_in_halves_and_each_is_asked():
    pipe = load_pipeline("full")
    step = next(s for s in pipe.build_steps("knowledge") if isinstance(s, LLMStep))
    chunk = "\n\n".join(f"Paragraph {i} says that the {i}th lantern is lit by child number {i}." for i in range(12))
    leaf = {"seed_examples": [{"context": "c", "question": "q?", "answer": "a."}], "domain": "islands", "leaf": "k"}

    async def ask(messages, **params):
        prompt = messages[-1]["content"]
        if "Paragraph 0 " in prompt and "Paragraph 11 " in prompt:
            return Reply(key="whole", error="prompt too long: 900 tokens + 480 to generate > context window 1024")
        n = prompt.count("Paragraph ")
        return Reply(f"Question: Who lights lantern {n}?\nAnswer: Child number {n}.", "stop", f"half{n}")

    kept, rejected = run(step, [{"chunk": chunk, "examples": leaf["seed_examples"]}], unit(ask, leaf=leaf))
    assert rejected == []
    assert len(kept) == 2 and all(r["chunk"] in chunk for r in kept)
    assert sum(r["chunk"].count("Paragraph ") for r in kept) == 12  # nothing of the passage is lost


def test_a_prompt_too_long_without_a_chunk_is_rejected():
    step = load_pipeline("full").build_steps("freeform_skill")[1]
    ask, _ = scripted([Reply(key="k", error="prompt too long: 2000 tokens + 320 to generate > context window 1024")])
    kept, rejected = run(step, [{"examples": SEEDS}], unit(ask))
    assert kept == [] and rejected[0]["reason"].startswith("prompt too long")


def test_grounded_filter_rejects_answers_with_numbers_or_names_not_in_the_passage():
    step = next(s for s in load_pipeline("simple").build_steps("knowledge") if isinstance(s, FilterStep))
    step.prepare(LEAF, None)
    chunk = "At the 2020 census Marrowvey had 14,620 inhabitants. The capital is Port Sorrel."
    rows = [{"question": "How many people live on Marrowvey?", "answer": "About 1,000 people.", "chunk": chunk},
            {"question": "What is the capital of Marrowvey?", "answer": "The capital is Port Sorrel.", "chunk": chunk},
            {"question": "What is the capital?", "answer": "It is Haskwith, by the sea.", "chunk": chunk}]
    kept, rejected = run(step, rows)
    assert [r["answer"] for r in kept] == ["The capital is Port Sorrel."]
    assert [r["reason"] for r in rejected] == ["answer states what the passage does not (1000)",
                                               "answer states what the passage does not (Haskwith)"]
