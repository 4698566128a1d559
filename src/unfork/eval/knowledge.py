"""The ``knowledge`` benchmark: did the student learn the facts of the knowledge documents?

Like InstructLab's MMLU-branch, but built from the contributor's own
documents: the teacher writes questions with one-sentence answers from each
chunk of each knowledge leaf's documents; answers whose numbers or names are
not in the chunk are dropped, and the three wrong options are the right
sentence with its key fact swapped for another number or name of the same
document (so they differ only in the fact, and a model that never read the
document cannot tell them apart). Questions close to a question of the
training data are dropped, so the score measures knowledge and not recall of
a training sample. Base and trained models are scored the same
way lm-evaluation-harness scores MMLU: the option with the highest
log-likelihood per byte is the model's choice. Chance is 25%.

The teacher's questions come from the built-in ``knowledge_exam`` SDG
pipeline, which the SDG engine runs over the chunks with its journal and
request log in the SDG cache, so an interrupted exam resumes where it stopped.
The questions are cached in the dataset folder (``eval_knowledge.json``), so
every model evaluated against that dataset gets the same exam.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unfork.errors import UserError
from unfork.sdg.facts import unsupported

if TYPE_CHECKING:
    from unfork.contracts import DatasetManifest
    from unfork.documents.chunk import Chunk
    from unfork.sdg.dedup import RougeIndex
    from unfork.sdg.engine import UnitOutcome
    from unfork.sdg.pipeline import Pipeline
    from unfork.taxonomy.leaf import Leaf

QUESTIONS_FILE = "eval_knowledge.json"
HOLD_OUT_ROUGE = 0.7  # a question this close (ROUGE-L) to a training question is not a fair test
PER_CHUNK = 6  # most of a small teacher's questions fall to the filters; more per chunk make a steadier exam
CHUNK_TOKENS = 350

EXAM_PIPELINE = "knowledge_exam"  # the built-in SDG pipeline that writes the questions
EXAM_STEP = "exam_questions"

_NUMBER = re.compile(r"\b\d{1,3}(?:,\d{3})+\b|\b\d+(?:\.\d+)?\b")
_NAME = re.compile(r"\b[A-Z][a-z]+(?:[' ](?:of |the )?[A-Z][a-z]+)*")
_SALIENT = re.compile(r"\d[\d,.]*|\b[A-Z][a-z]+(?:[' ][A-Z][a-z]+)*")


@dataclass
class MCQuestion:
    leaf: str
    question: str
    correct: str
    wrong: list[str]
    source: str = ""  # "<document>#<chunk index>"

    @property
    def key(self) -> str:
        return hashlib.sha256(f"{self.leaf}\n{self.question}".encode()).hexdigest()[:12]

    def options(self) -> tuple[list[str], int]:
        """The four options in a fixed shuffled order (stable per question), and the right one's index."""
        opts = [self.correct, *self.wrong]
        order = list(range(len(opts)))
        random.Random(self.key).shuffle(order)
        return [opts[i] for i in order], order.index(0)


@dataclass
class ExamBuild:
    questions: list[MCQuestion] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


# --------------------------------------------------------------------------- building the exam


def exam_pipeline(per_chunk: int = PER_CHUNK) -> Pipeline:
    """The exam's SDG pipeline, asking for ``per_chunk`` questions per chunk."""
    import dataclasses

    from unfork.sdg.pipeline import load_pipeline

    pipe = load_pipeline(EXAM_PIPELINE)
    flow = pipe.flows["knowledge"]
    steps = [dataclasses.replace(s, options={**s.options, "n": per_chunk, "max_tokens": 60 * per_chunk + 40})
             if s.name == EXAM_STEP else s for s in flow.steps]
    pipe.flows["knowledge"] = dataclasses.replace(flow, steps=steps)
    return pipe


def parse_pairs(raw: str) -> list[dict[str, str]]:
    """``Question:``/``Answer:`` records of the teacher's reply, read as the exam pipeline reads them."""
    from unfork.sdg.parsers import PARSERS

    [spec] = [s for s in exam_pipeline().flows["knowledge"].steps if s.name == EXAM_STEP]
    return PARSERS[spec.options["parser"]](raw, False, spec.writes, labels=spec.options["labels"]).items


def _salient(text: str) -> set[str]:
    return {s.replace(",", "").rstrip(".").casefold() for s in _SALIENT.findall(text)}


def key_fact(answer: str, question: str) -> tuple[str, str] | None:
    """The fact the answer adds to the question: a number, else a name; with its kind."""
    asked = _salient(question)
    for m in _NUMBER.finditer(answer):
        if m.group(0).replace(",", "") not in asked:
            return m.group(0), "number"
    for m in _NAME.finditer(answer):
        name = m.group(0)
        if name.casefold() not in asked and not all(w.casefold() in asked for w in name.split()) \
                and (m.start() > 0 or " " in name):
            return name, "name"
    return None


def distractors(fact: str, kind: str, document: str, rng: random.Random, k: int = 3) -> list[str]:
    """``k`` wrong values of the same kind: other numbers or names of the same document, else near numbers."""
    if kind == "number":
        value = float(fact.replace(",", ""))
        pool = {n for n in _NUMBER.findall(document) if n != fact and ("," in n) == ("," in fact)
                and ("." in n) == ("." in fact) and len(n) == len(fact)}
        if len(pool) < k and "." not in fact:
            step = max(1, round(abs(value) * 0.15))
            near = [int(value) + d * step for d in (-2, -1, 1, 2, 3) if int(value) + d * step > 0]
            shaped = {f"{n:,}" if "," in fact else str(n) for n in near}
            pool |= {n for n in shaped if len(n) == len(fact) and n != fact}
    else:
        words = len(fact.split())
        pool = {n for n in _names(document) if n != fact and fact not in n and n not in fact
                and abs(len(n.split()) - words) <= 1}
    return rng.sample(sorted(pool), k) if len(pool) >= k else []


def _names(document: str) -> set[str]:
    """Capitalised names used inside a sentence at least once (not just a sentence's or heading's first word)."""
    out: set[str] = set()
    for m in _NAME.finditer(document):
        if m.group(0).startswith("The "):  # "The Tamsey": the article belongs to the sentence
            continue
        before = document[max(0, m.start() - 2):m.start()]
        mid_sentence = m.start() > 0 and before[-1:] == " " and before[:1] not in ".!?:\n#" and before.strip() != ""
        several_words = " " in m.group(0) and before[-1:] in (" ", "\n")
        if mid_sentence or several_words:
            out.add(m.group(0))
    return out


# a sentence ends at . ! ? before a capital (not after "Dr." and the like), or at a blank line
_SENTENCE_END = re.compile(r"(?<![A-Z][a-z])(?<![A-Z])(?<=[.!?])\s+(?=[A-Z\"'])|\n\s*\n")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3})")
_WORD = re.compile(r"[a-z]{4,}")
_QUESTION_WORDS = {"what", "which", "when", "where", "whom", "whose", "many", "much", "does", "year", "years",
                   "there", "their", "have", "with", "from", "that", "this", "into", "about", "long", "name",
                   "called", "take", "place", "first"}


def _stems(text: str) -> set[str]:
    return {w[:5] for w in _WORD.findall(text.casefold()) if w not in _QUESTION_WORDS}


def fact_fits_question(fact: str, question: str, chunk: str) -> bool:
    """A sentence of the chunk states ``fact`` and shares a content word with the question.

    A weak teacher often pairs a question with a number from elsewhere in the
    passage ("What year was the island founded?" - "1988", the year a museum
    opened); such a question has no right answer, so it only adds noise.
    Words found in more than a third of the sentences (the document's subject) do not count.
    """
    sentences = [_THOUSANDS.sub("", " ".join(x.split())) for x in _SENTENCE_END.split(chunk) if x.strip()]
    stems = [_stems(x) for x in sentences]
    seen_in = Counter(w for words in stems for w in words)
    common = {w for w, n in seen_in.items() if n > len(sentences) / 3}
    said = re.compile(r"(?<![\w.])" + re.escape(_THOUSANDS.sub("", fact)) + r"(?![\w]|\.\d)", re.IGNORECASE)
    asked = _stems(question) - common
    return any(asked & words for x, words in zip(sentences, stems, strict=True) if said.search(x))


def make_question(pair: dict[str, str], chunk: str, document: str,
                  trusted: bool = False) -> tuple[dict[str, Any] | None, str]:
    """A multiple-choice question from a teacher's pair (or a ``trusted`` seed example), or None and why not."""
    question, answer = pair["question"].strip(), " ".join(pair["answer"].split())
    if len(question.split()) < 4 or not question.endswith("?"):
        return None, "not a question"
    if re.search(r"\b(passage|the text|the document|the author)\b", question, re.I):
        return None, "refers to the passage"
    if unsupported(answer, chunk, question):
        return None, "answer not supported by the document"
    fact = key_fact(answer, question)
    if fact is None:
        return None, "no checkable fact"
    if not trusted and not fact_fits_question(fact[0], question, chunk):
        return None, "no sentence states the fact about what is asked"
    rng = random.Random(f"{question}\n{answer}")
    wrong = [answer.replace(fact[0], d, 1) for d in distractors(fact[0], fact[1], document, rng)]
    if len(wrong) < 3:
        return None, "too few distractors"
    return {"question": question, "correct": answer, "wrong": wrong}, ""


def knowledge_leaves(dataset: Path) -> tuple[Path, list[Any]]:
    """The taxonomy the dataset came from and its knowledge leaves (as the generator read them)."""
    from unfork.taxonomy.leaf import load_leaf

    manifest = _manifest(dataset)
    root = Path(manifest.settings.get("taxonomy", ""))
    rels = [entry["leaf"] for entry in manifest.leaves if entry.get("flow") == "knowledge"]
    if not rels:
        return root, []
    if not root.is_dir():
        raise UserError(f"the taxonomy {root} that {dataset} was generated from is gone",
                        hint="the knowledge benchmark reads the documents of its knowledge leaves")
    return root, [load_leaf(root / rel / "qna.yaml", root) for rel in rels]


def training_questions(dataset: Path) -> list[str]:
    """Every question the training data asks (the generated rows, not the RAFT-wrapped prompts)."""
    out = []
    for path in sorted((dataset / "leaves").glob("*/accepted.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                q = json.loads(line).get("row", {}).get("question")
                if q:
                    out.append(str(q))
    return out


@dataclass
class _LeafChunks:
    leaf: Leaf
    document: str  # all its documents, where distractors come from
    chunks: list[Chunk]  # each one unit of the exam pipeline


def _leaf_chunks(leaves: list[Leaf], root: Path) -> list[_LeafChunks]:
    from unfork.documents.chunk import chunk_documents
    from unfork.paths import get_paths
    from unfork.sdg.run import leaf_documents

    out = []
    for leaf in leaves:
        docs = leaf_documents(leaf, root, get_paths().cache_dir / "documents")
        out.append(_LeafChunks(leaf, "\n\n".join(d.text for d in docs), chunk_documents(docs, max_tokens=CHUNK_TOKENS)))
    return out


async def _write_questions(parts: list[_LeafChunks], client: Any, model: str | None, per_chunk: int,
                           seed: int) -> list[dict[int, UnitOutcome]]:
    """Run the exam pipeline over every chunk, journaled per leaf in the SDG cache; each leaf's outcomes by chunk.

    Chunk ``i`` over all leaves is asked with seed ``seed + i``, so the cache key holds each leaf's first seed.
    """
    from unfork.paths import get_paths
    from unfork.sdg.engine import PlannedUnit, open_run, run_planned
    from unfork.sdg.teacher import Teacher

    pipeline = exam_pipeline(per_chunk)
    teacher = Teacher(client, model, context_window=0)  # no window check: a prompt the server refuses costs its chunk
    slots = asyncio.Semaphore(2 * teacher.capacity + 2)
    runs, work, first = [], [], seed
    try:
        for part in parts:
            settings = {"seed": first, "teacher": model, "per_chunk": per_chunk, "chunk_tokens": CHUNK_TOKENS}
            run = open_run(part.leaf, pipeline, teacher, get_paths().cache_dir / "sdg", settings,
                           target=len(part.chunks), seed=first)
            runs.append(run)
            units = [PlannedUnit(u, {"chunk": c.text}, first + u) for u, c in enumerate(part.chunks)]
            work.append(run_planned(run, units, slots))
            first += len(part.chunks)
        return list(await asyncio.gather(*work))
    finally:
        for run in runs:
            run.close()


def build_exam(dataset: Path, client: Any, model: str | None, *, per_chunk: int = PER_CHUNK,
               seed: int = 7, echo: Callable[[str], None] = print) -> ExamBuild:
    """Ask the teacher (an async OpenAI client) for questions on every chunk of every knowledge document."""
    from unfork.sdg.dedup import RougeIndex

    root, leaves = knowledge_leaves(dataset)
    build = ExamBuild()
    parts = _leaf_chunks(leaves, root)
    count = sum(len(p.chunks) for p in parts)
    if not count:
        return build
    echo(f"Writing the knowledge exam: {count} document chunks, {per_chunk} questions each ...")
    outcomes = asyncio.run(_closing(client, _write_questions(parts, client, model, per_chunk, seed)))
    held_out = RougeIndex(HOLD_OUT_ROUGE)
    for q in training_questions(dataset):
        held_out.add(q)
    seen = RougeIndex(0.7)
    for part in parts:
        # The leaf's own seed questions are the test split: never trained on, written by the contributor.
        for row in part.leaf.columns.get("seed_examples") or []:
            rec, reason = make_question(row, row.get("context") or part.document, part.document, trusted=True)
            if rec is None:
                build.drop(f"seed: {reason}")
                continue
            seen.add(rec["question"])
            build.questions.append(MCQuestion(part.leaf.rel, rec["question"], rec["correct"], rec["wrong"],
                                              "seed example"))
    for part, by_chunk in zip(parts, outcomes, strict=True):
        for u, chunk in enumerate(part.chunks):
            _add_questions(build, part, chunk, by_chunk[u], per_chunk, held_out, seen)
    return build


def _add_questions(build: ExamBuild, part: _LeafChunks, chunk: Chunk, outcome: UnitOutcome, per_chunk: int,
                   held_out: RougeIndex, seen: RougeIndex) -> None:
    """The chunk's questions that pass every check, in the teacher's order; the others counted by reason."""
    if outcome.failures:
        cause = outcome.failures[0].cause
        build.drop(f"teacher error: {type(cause).__name__}" if cause is not None else "teacher error")
        return
    for pair in outcome.accepted[:per_chunk]:
        rec, reason = make_question(pair, chunk.text, part.document)
        if rec and held_out.find(rec["question"])[1] is not None:
            rec, reason = None, "close to a training question"
        if rec and seen.find(rec["question"])[1] is not None:
            rec, reason = None, "duplicate"
        if rec is None:
            build.drop(reason)
            continue
        seen.add(rec["question"])
        build.questions.append(MCQuestion(part.leaf.rel, rec["question"], rec["correct"], rec["wrong"],
                                          f"{chunk.doc}#{chunk.index}"))


async def _closing(client: Any, coro: Any) -> Any:
    try:
        return await coro
    finally:
        await client.aclose()


def load_or_build_exam(dataset: Path, make_client: Callable[[], tuple[Any, str | None]], *,
                       echo: Callable[[str], None] = print) -> dict[str, Any]:
    """The cached exam of ``dataset``, or a new one written by the teacher that ``make_client`` opens."""
    path = dataset / QUESTIONS_FILE
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    client, model = make_client()
    build = build_exam(dataset, client, model, echo=echo)
    exam = {"format": "unfork-knowledge-exam-1", "teacher": model, "hold_out_rouge_l": HOLD_OUT_ROUGE,
            "questions": [asdict(q) for q in build.questions], "dropped": build.dropped}
    if build.questions:  # an empty exam is not cached: a better teacher may do it next time
        from unfork.fsio import atomic_write_json

        atomic_write_json(path, exam, ensure_ascii=False)
    return exam


# --------------------------------------------------------------------------- scoring


def score_model(responder: Any, questions: list[MCQuestion], system: str | None) -> list[dict[str, Any]]:
    from unfork.eval.general import choose

    out = []
    for q in questions:
        options, right = q.options()
        picked = choose(responder, q.question, options, system)
        out.append({"picked": None if picked is None else options[picked], "correct": picked == right})
    return out


def _manifest(dataset: Path) -> DatasetManifest:
    from unfork.contracts import DatasetFolder

    manifest = DatasetFolder(dataset).read_manifest()
    if manifest is None:
        raise UserError(f"{dataset} is not a generated dataset (no readable {DatasetFolder.MANIFEST})",
                        hint="pass --data-path with a folder written by unfork data generate")
    return manifest


def summarize(questions: list[MCQuestion], base: list[dict[str, Any]], trained: list[dict[str, Any]],
              labels: tuple[str, str]) -> dict[str, Any]:
    """The shared result shape (see unfork.eval.results): accuracy in percent, per leaf and overall."""
    def pct(rows: list[dict[str, Any]]) -> float:
        return round(100.0 * sum(r["correct"] for r in rows) / len(rows), 1) if rows else 0.0

    per_leaf = []
    for leaf in dict.fromkeys(q.leaf for q in questions):
        idx = [i for i, q in enumerate(questions) if q.leaf == leaf]
        b, t = pct([base[i] for i in idx]), pct([trained[i] for i in idx])
        per_leaf.append({"leaf": leaf, "n": len(idx), "base": b, "trained": t, "delta": round(t - b, 1),
                         "verdict": "improved" if t > b else "regressed" if t < b else "same"})
    b, t = pct(base), pct(trained)
    items = [{"leaf": q.leaf, "question": q.question, "reference": q.correct, "options": q.options()[0],
              "base_answer": br["picked"], "trained_answer": tr["picked"],
              "base_score": int(br["correct"]), "trained_score": int(tr["correct"]), "source": q.source}
             for q, br, tr in zip(questions, base, trained, strict=True)]
    return {"benchmark": "knowledge", "models": {"base": labels[0], "trained": labels[1]}, "metric": "accuracy",
            "overall": {"base": b, "trained": t, "delta": round(t - b, 1), "n": len(questions)},
            "per_leaf": per_leaf, "items": items, "judge": None, "chance": 25.0}


# --------------------------------------------------------------------------- the benchmark


def teacher_opener(judge_url: str | None, judge_model: str | None, api_key: str | None, stack: Any):
    """A function opening the async client that writes the exam: the given endpoint or the local teacher."""
    from unfork.client import ClientSettings, OpenAIClient

    def open_() -> tuple[Any, str | None]:
        if judge_url:
            return OpenAIClient(ClientSettings(judge_url, api_key=api_key, max_concurrency=8)), judge_model
        from unfork.config import load_config
        from unfork.serve.launch import running_server

        ep = stack.enter_context(running_server(judge_model or load_config().models.teacher, parallel=8,
                                                slot_ctx=2048))
        return OpenAIClient(ClientSettings(ep.base_url, api_key=ep.api_key, max_concurrency=8)), ep.model

    return open_


def run_knowledge(model: str, base_model: str, *, data_path: str | Path | None = None,
                  judge_url: str | None = None, judge_model: str | None = None, api_key: str | None = None,
                  output_dir: Path | None = None, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Base against trained on the exam of the dataset's knowledge documents (written once by the teacher)."""
    import contextlib

    from unfork.eval.answers import open_responder
    from unfork.eval.compare import dataset_for, run_of

    dataset = dataset_for(run_of(model), data_path)
    with contextlib.ExitStack() as stack:
        exam = load_or_build_exam(dataset, teacher_opener(judge_url, judge_model, api_key, stack), echo=echo)
    questions = [MCQuestion(**q) for q in exam["questions"]]
    if not questions:
        dropped = ", ".join(f"{n} {why}" for why, n in exam.get("dropped", {}).items()) or "no knowledge leaf"
        raise UserError(f"no usable knowledge question for {dataset} ({dropped})",
                        hint="the knowledge benchmark needs knowledge leaves and a teacher that follows the format")
    system = str(_manifest(dataset).pipeline.get("mix", {}).get("system_prompt") or "") or None
    echo(f"Knowledge exam: {len(questions)} questions from the documents "
         f"({sum(exam.get('dropped', {}).values())} discarded while writing it)")
    scored = []
    for which in (base_model, model):
        with open_responder(which) as responder:
            scored.append((responder.name, score_model(responder, questions, system)))
    result = summarize(questions, scored[0][1], scored[1][1], (scored[0][0], scored[1][0]))
    result["dataset"] = str(dataset)
    result["exam"] = {"questions": len(questions), "dropped": exam.get("dropped", {}), "teacher": exam.get("teacher")}
    if output_dir:
        from unfork.eval.results import write_result

        write_result(result, Path(output_dir))
    return result
