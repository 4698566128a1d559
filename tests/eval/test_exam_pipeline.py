"""The knowledge exam written by the SDG engine: the same exam as the hand-written loop it replaced, and resumable.

The reference below is that loop, frozen as it was (prompt, one request per
chunk, parsing, filters), so the test can compare the exam file byte for byte
and the requests sent one for one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from tests.client.fake_openai import FakeOpenAI, Reply
from tests.conftest import REPO
from unfork.client import ClientSettings, OpenAIClient
from unfork.contracts import DatasetManifest
from unfork.eval import knowledge as kn
from unfork.taxonomy.examples import prepare_example_taxonomy

LEAF = "knowledge/geography/islands/marrowvey"
MODEL = "scripted-teacher"
ERROR_SEED, REFUSAL_SEED, CUT_SEED = 9, 10, 11

# --------------------------------------------------------------------------- the loop it replaced, frozen

OLD_PROMPT = """Below is a passage from a document about {domain}.

[PASSAGE]
{chunk}
[END OF PASSAGE]

Write {n} questions about different facts stated in the passage: names, numbers, years, places. Each question must make sense without the passage: name the subject instead of saying "the passage". After each question, answer it with one short sentence that states the fact.

Use exactly this format (shown with a made-up pair, not about the passage):

Question: In which year did the Harlow Bridge open?
Answer: The Harlow Bridge opened in 1932.
"""


def old_parse_pairs(raw):
    from unfork.sdg.parsers import labeled

    return labeled(raw, False, ["question", "answer"], labels={"question": ["Question", "Q"],
                                                               "answer": ["Answer", "A"]}).items


def old_build_exam(dataset, client, model, *, per_chunk=6, seed=7):
    from unfork.documents.chunk import chunk_documents
    from unfork.paths import get_paths
    from unfork.sdg.dedup import RougeIndex
    from unfork.sdg.run import leaf_documents

    root, leaves = kn.knowledge_leaves(dataset)
    build = kn.ExamBuild()
    jobs, seeds = [], []
    for leaf in leaves:
        docs = leaf_documents(leaf, root, get_paths().cache_dir / "documents")
        document = "\n\n".join(d.text for d in docs)
        seeds += [(leaf.rel, row, document) for row in leaf.columns.get("seed_examples") or []]
        for chunk in chunk_documents(docs, max_tokens=kn.CHUNK_TOKENS):
            prompt = OLD_PROMPT.format(domain=leaf.columns.get("domain") or "a subject", chunk=chunk.text, n=per_chunk)
            jobs.append((leaf.rel, chunk, document, prompt))

    async def ask(prompt, s):
        result = await client.chat([{"role": "user", "content": prompt}], model=model, temperature=0.7,
                                   max_tokens=60 * per_chunk + 40, seed=s)
        return result.text

    async def everything():
        try:
            return await asyncio.gather(*(ask(job[3], seed + i) for i, job in enumerate(jobs)), return_exceptions=True)
        finally:
            await client.aclose()

    replies = asyncio.run(everything())
    held_out = RougeIndex(kn.HOLD_OUT_ROUGE)
    for q in kn.training_questions(dataset):
        held_out.add(q)
    seen = RougeIndex(0.7)
    for rel, row, document in seeds:
        rec, reason = kn.make_question(row, row.get("context") or document, document, trusted=True)
        if rec is None:
            build.drop(f"seed: {reason}")
            continue
        seen.add(rec["question"])
        build.questions.append(kn.MCQuestion(rel, rec["question"], rec["correct"], rec["wrong"], "seed example"))
    for (rel, chunk, document, _), reply in zip(jobs, replies, strict=True):
        if isinstance(reply, BaseException):
            build.drop(f"teacher error: {type(reply).__name__}")
            continue
        for pair in old_parse_pairs(reply)[:per_chunk]:
            rec, reason = kn.make_question(pair, chunk.text, document)
            if rec and held_out.find(rec["question"])[1] is not None:
                rec, reason = None, "close to a training question"
            if rec and seen.find(rec["question"])[1] is not None:
                rec, reason = None, "duplicate"
            if rec is None:
                build.drop(reason)
                continue
            seen.add(rec["question"])
            build.questions.append(kn.MCQuestion(rel, rec["question"], rec["correct"], rec["wrong"],
                                                 f"{chunk.doc}#{chunk.index}"))
    return build


def old_exam_bytes(dataset, client, model):
    build = old_build_exam(dataset, client, model)
    exam = {"format": "unfork-knowledge-exam-1", "teacher": model, "hold_out_rouge_l": kn.HOLD_OUT_ROUGE,
            "questions": [asdict(q) for q in build.questions], "dropped": build.dropped}
    return (json.dumps(exam, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


# --------------------------------------------------------------------------- a teacher and a dataset


def question_on(sentence):
    return f"Which statement about {' '.join(re.findall(r'[a-z]{3,}', sentence)[:3])} is true?"


def sentences(passage):
    flat = " ".join(passage.split())
    return [s for s in re.split(r"(?<=\.)\s+", flat) if len(s.split()) >= 6 and re.search(r"\d|[a-z] [A-Z]", s)]


def exam_teacher(body):
    """Replies that are a function of the prompt, seed, temperature and max_tokens alone, with every kind of case."""
    prompt, seed = body["messages"][-1]["content"], body["seed"]
    if seed == ERROR_SEED:
        return Reply(status=400, body={"error": {"message": "the teacher refuses this seed"}})
    if seed == REFUSAL_SEED:
        return Reply(text="I'm sorry, I cannot help with that.")
    passage = prompt.split("[PASSAGE]\n", 1)[1].split("\n[END OF PASSAGE]", 1)[0]
    found = sentences(passage) or ["Nothing here."]
    h = int(hashlib.sha256(f"{prompt}|{seed}|{body['temperature']}|{body['max_tokens']}".encode()).hexdigest(), 16)
    picked = [found[(h + i) % len(found)] for i in range(7)]  # more than asked for, some twice
    pairs = [f"Question: {question_on(s)}\nAnswer: {s}" for s in picked]
    pairs.insert(h % 3, "Question: In which year did the Harlow Bridge open?\nAnswer: The Harlow Bridge opened in 1932.")
    if seed == CUT_SEED:  # cut off by the token limit inside the third answer
        text = "\n\n".join(pairs[:3])
        return Reply(text=text[:text.rindex(" ")], finish_reason="length")
    return Reply(text="\n\n".join(pairs))


@pytest.fixture
def dataset(tmp_path):
    taxonomy = prepare_example_taxonomy(tmp_path / "taxonomy")
    ds = tmp_path / "ds"
    (ds / "leaves" / "k").mkdir(parents=True)
    manifest = DatasetManifest(pipeline={"name": "simple"}, teacher=MODEL, seed=7,
                               settings={"taxonomy": str(taxonomy)},
                               leaves=[{"leaf": LEAF, "flow": "knowledge"},
                                       {"leaf": "compositional_skills/writing/freeform/haiku", "flow": "freeform_skill"}])
    (ds / "manifest.json").write_text(json.dumps(manifest.to_dict(), indent=2))
    document = (taxonomy / ".unfork/docs/marrowvey/marrowvey.md").read_text()
    trained = [question_on(s) for s in sentences(document)[::4]]  # some exam questions repeat training ones
    (ds / "leaves" / "k" / "accepted.jsonl").write_text("".join(json.dumps({"row": {"question": q}}) + "\n"
                                                                for q in trained))
    return ds


def opener(fake, concurrency=4):
    return lambda: (OpenAIClient(ClientSettings(fake.url, max_concurrency=concurrency)), MODEL)


def chats(fake):
    """The bodies of the chat requests, in the order they came."""
    return [body for method, path, body in fake.requests if method == "POST" and path.endswith("/chat/completions")]


def chat_bodies(fake):
    return sorted(json.dumps(body, sort_keys=True) for body in chats(fake))


# --------------------------------------------------------------------------- the tests


def test_the_exam_is_byte_identical_to_the_hand_written_loop_and_sends_the_same_requests(dataset):
    with FakeOpenAI(on_chat=exam_teacher, http11=True, model=MODEL) as old_fake:
        expected = old_exam_bytes(dataset, opener(old_fake)()[0], MODEL)
    with FakeOpenAI(on_chat=exam_teacher, http11=True, model=MODEL) as fake:
        exam = kn.load_or_build_exam(dataset, opener(fake), echo=lambda _: None)
    assert (dataset / kn.QUESTIONS_FILE).read_bytes() == expected
    assert chat_bodies(fake) == chat_bodies(old_fake)
    seeds = sorted(json.loads(b)["seed"] for b in chat_bodies(fake))
    assert seeds == list(range(7, 7 + len(seeds))) and len(seeds) > CUT_SEED - 7
    # every path of the old loop is on this exam: a teacher error, filters, a cut-off reply, the seed examples
    dropped = exam["dropped"]
    assert dropped["teacher error: APIError"] == 1
    assert {"close to a training question", "duplicate", "answer not supported by the document"} <= set(dropped)
    assert exam["questions"] and any(q["source"] == "seed example" for q in exam["questions"])


def test_a_rerun_replays_the_journal_and_asks_only_for_what_failed(dataset, unfork_home):
    with FakeOpenAI(on_chat=exam_teacher, http11=True, model=MODEL) as fake:
        first = kn.build_exam(dataset, *opener(fake)(), echo=lambda _: None)
        asked = len(chats(fake))
        [log] = (unfork_home / "cache" / "sdg").glob("*/requests.jsonl")
        log.unlink()  # the journal alone holds the finished chunks
        again = kn.build_exam(dataset, *opener(fake)(), echo=lambda _: None)
        second = chats(fake)[asked:]
    assert again == first
    assert [b["seed"] for b in second] == [ERROR_SEED]  # only the chunk whose request failed
    [leaf_json] = (unfork_home / "cache" / "sdg").glob("*/leaf.json")
    assert json.loads(leaf_json.read_text())["pipeline"] == kn.EXAM_PIPELINE


def _done_units(journal: Path) -> set[int]:
    if not journal.is_file():
        return set()
    return {json.loads(x)["unit"] for x in journal.read_bytes().split(b"\n") if x.endswith(b'"done":true}')}


SCRIPT = """
import sys
from pathlib import Path
from unfork.client import ClientSettings, OpenAIClient
from unfork.eval.knowledge import load_or_build_exam

url, ds = sys.argv[1], Path(sys.argv[2])
load_or_build_exam(ds, lambda: (OpenAIClient(ClientSettings(url, max_concurrency=1)), "scripted-teacher"))
"""


def test_a_killed_exam_build_resumes_without_asking_again_for_chunks_already_done(dataset, unfork_home):
    fake = FakeOpenAI(on_chat=lambda body: dataclasses.replace(exam_teacher(body), delay=0.15), http11=True,
                      model=MODEL)
    env = {**os.environ, "UNFORK_HOME": str(unfork_home), "PYTHONPATH": str(REPO / "src")}
    with fake:
        proc = subprocess.Popen([sys.executable, "-c", SCRIPT, fake.url, str(dataset)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cache = unfork_home / "cache" / "sdg"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(_done_units(next(cache.glob("*/journal.jsonl"),
                                                                    cache / "none"))) < 3:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        [journal] = cache.glob("*/journal.jsonl")
        done = _done_units(journal)
        logged = [json.loads(x) for x in (journal.parent / "requests.jsonl").read_text().splitlines() if x.endswith("}")]
        asked = len(chats(fake))
        assert len(done) >= 3 and logged and not (dataset / kn.QUESTIONS_FILE).exists()

        kn.load_or_build_exam(dataset, opener(fake), echo=lambda _: None)
        second = {b["seed"] for b in chats(fake)[asked:]}
        seeds = {b["seed"] for b in chats(fake)}
    assert seeds == set(range(7, 7 + len(seeds)))
    assert second and not second & {7 + u for u in done}  # no finished chunk asked again
    assert _done_units(journal) == set(range(len(seeds))) - {ERROR_SEED - 7}  # all but the failing one
    with FakeOpenAI(on_chat=exam_teacher, http11=True, model=MODEL) as old_fake:
        expected = old_exam_bytes(dataset, opener(old_fake)()[0], MODEL)
    assert (dataset / kn.QUESTIONS_FILE).read_bytes() == expected  # the resumed exam is the whole exam


def test_the_exam_pipeline_takes_its_chunks_from_its_caller(tmp_path):
    import shutil

    from unfork.sdg.engine import generate
    from unfork.sdg.pipeline import BUILTIN_DIR, PipelineError, load_pipeline
    from unfork.sdg.teacher import Teacher
    from unfork.taxonomy.leaf import load_leaf

    pipe = kn.exam_pipeline(3)
    [spec] = pipe.flows["knowledge"].steps
    assert (spec.options["n"], spec.options["max_tokens"], spec.options["temperature"]) == (3, 220, 0.7)
    assert pipe.flows["knowledge"].inputs == ["chunk"]
    # without its inputs the check finds the chunk nobody writes
    mine = tmp_path / "mine"
    shutil.copytree(BUILTIN_DIR / kn.EXAM_PIPELINE, mine)
    (mine / "pipeline.yaml").write_text((mine / "pipeline.yaml").read_text().replace("    inputs: [chunk]\n", ""))
    with pytest.raises(PipelineError, match="reads column 'chunk', which no earlier step writes"):
        load_pipeline(str(mine))
    # and data generation, which has no chunks to give, refuses to run it
    taxonomy = prepare_example_taxonomy(tmp_path / "taxonomy")
    leaf = load_leaf(taxonomy / LEAF / "qna.yaml", taxonomy)
    with pytest.raises(PipelineError, match="needs chunk from its caller"):
        asyncio.run(generate([leaf], pipe, Teacher(None, MODEL, context_window=0), target=1, concurrency=1, seed=7,
                             cache_root=tmp_path / "c"))
