"""The ``knowledge`` benchmark: did the student learn the facts of the knowledge documents?

Like InstructLab's MMLU-branch, but built from the contributor's own
documents: the teacher writes multiple-choice questions from each chunk of
each knowledge leaf's documents (the right answer and three wrong ones, all as
full sentences that differ only in the fact), and any question close to a
question of the training data is dropped, so the score measures knowledge and
not recall of a training sample. Base and trained models are scored the same
way lm-evaluation-harness scores MMLU: the option with the highest
log-likelihood per byte is the model's choice. Chance is 25%.

The questions are cached in the dataset folder (``eval_knowledge.json``), so
every model evaluated against that dataset gets the same exam.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from unfork.errors import UserError
from unfork.sdg.facts import unsupported

QUESTIONS_FILE = "eval_knowledge.json"
HOLD_OUT_ROUGE = 0.6  # a question this close (ROUGE-L) to a training question is not a fair test
PER_CHUNK = 5
CHUNK_TOKENS = 400

PROMPT = """Below is a passage from a document about {domain}.

[PASSAGE]
{chunk}
[END OF PASSAGE]

Write {n} multiple-choice exam questions about different facts stated in the passage (names, numbers, years, places, what something is or does). Each question must be answerable from the passage alone and must make sense without it: name the subject instead of saying "the passage" or "the text".

For each question write the correct answer as one short sentence, then three wrong answers: the same sentence with the key fact replaced by a different, plausible one of the same kind (another number, another name, another year). Wrong answers must be false according to the passage.

Use exactly this format, with nothing else:

Question: ...
Correct: ...
Wrong: ...
Wrong: ...
Wrong: ...
"""

_FIELD = re.compile(r"^\s*(?:[*_#>\-]+\s*)?(question|correct(?: answer)?|wrong(?: answer)?)\s*\d*\s*(?:[*_]+\s*)?"
                    r"[:.)]\s*(?:[*_]+\s*)?(.*)$", re.I)
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


def parse_questions(raw: str) -> tuple[list[dict[str, Any]], int]:
    """``Question/Correct/Wrong×3`` records from the teacher's text; also the number of broken records."""
    records: list[dict[str, Any]] = []
    current: str | None = None
    for line in raw.splitlines():
        m = _FIELD.match(line)
        if not m:
            if current and records and line.strip():
                rec = records[-1]
                if current == "wrong" and rec["wrong"]:
                    rec["wrong"][-1] += " " + line.strip()
                elif current != "wrong":
                    rec[current] = (rec.get(current, "") + " " + line.strip()).strip()
            continue
        kind, text = m.group(1).split()[0].lower(), m.group(2).strip()
        if kind == "question":
            records.append({"question": text, "correct": "", "wrong": []})
        elif not records:
            continue
        elif kind == "correct":
            records[-1]["correct"] = text
        else:
            records[-1]["wrong"].append(text)
        current = kind
    good = [r for r in records if r["question"] and r["correct"] and len(r["wrong"]) >= 3]
    return good, len(records) - len(good)


def _salient(text: str) -> set[str]:
    return {s.replace(",", "").rstrip(".").casefold() for s in _SALIENT.findall(text)}


def check_question(rec: dict[str, Any], chunk: str) -> str | None:
    """Why a parsed question is unfit for the exam, or None when it is fit."""
    options = [rec["correct"], *rec["wrong"][:3]]
    if len({o.casefold().strip(" .") for o in options}) < 4:
        return "options not distinct"
    if len(rec["question"].split()) < 4 or not rec["question"].rstrip().endswith("?"):
        return "not a question"
    if re.search(r"\b(passage|the text|the document|the author)\b", rec["question"], re.I):
        return "refers to the passage"
    # The facts of the right answer (numbers, names) must come from the chunk.
    if unsupported(rec["correct"], chunk, rec["question"]):
        return "correct answer not supported by the document"
    facts = _salient(rec["correct"]) - _salient(rec["question"])
    if facts and any(_salient(w) == _salient(rec["correct"]) for w in rec["wrong"][:3]):
        return "a wrong answer states the same facts"
    return None


def knowledge_leaves(dataset: Path) -> tuple[Path, list[Any]]:
    """The taxonomy the dataset came from and its knowledge leaves (as the generator read them)."""
    from unfork.sdg.leaves import read_leaf

    manifest = _manifest(dataset)
    root = Path(manifest.get("settings", {}).get("taxonomy", ""))
    rels = [entry["leaf"] for entry in manifest.get("leaves", []) if entry.get("flow") == "knowledge"]
    if not rels:
        return root, []
    if not root.is_dir():
        raise UserError(f"the taxonomy {root} that {dataset} was generated from is gone",
                        hint="the knowledge benchmark reads the documents of its knowledge leaves")
    return root, [read_leaf(root / rel / "qna.yaml", root) for rel in rels]


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


async def _ask_teacher(client: Any, model: str | None, prompt: str, seed: int) -> str:
    result = await client.chat([{"role": "user", "content": prompt}], model=model, temperature=0.3,
                               max_tokens=900, seed=seed)
    return result.text


def build_exam(dataset: Path, client: Any, model: str | None, *, per_chunk: int = PER_CHUNK,
               seed: int = 7, echo: Callable[[str], None] = print) -> ExamBuild:
    """Ask the teacher (an async OpenAI client) for questions on every chunk of every knowledge document."""
    from unfork.paths import get_paths
    from unfork.sdg.dedup import RougeIndex
    from unfork.sdg.documents import chunk_documents
    from unfork.sdg.leaves import load_documents

    root, leaves = knowledge_leaves(dataset)
    build = ExamBuild()
    jobs = []
    for leaf in leaves:
        docs = load_documents(leaf, root, get_paths().cache_dir / "documents")
        for chunk in chunk_documents(docs, max_tokens=CHUNK_TOKENS):
            prompt = PROMPT.format(domain=leaf.columns.get("domain") or "a subject", chunk=chunk.text, n=per_chunk)
            jobs.append((leaf.rel, chunk, prompt))
    if not jobs:
        return build
    echo(f"Writing the knowledge exam: {len(jobs)} document chunks, {per_chunk} questions each ...")

    async def everything() -> list[str | BaseException]:
        return await asyncio.gather(*(_ask_teacher(client, model, p, seed + i) for i, (_, _, p) in enumerate(jobs)),
                                    return_exceptions=True)

    replies = asyncio.run(_closing(client, everything()))
    held_out = RougeIndex(HOLD_OUT_ROUGE)
    for q in training_questions(dataset):
        held_out.add(q)
    seen = RougeIndex(0.7)
    for (rel, chunk, _), reply in zip(jobs, replies, strict=True):
        if isinstance(reply, BaseException):
            build.drop(f"teacher error: {type(reply).__name__}")
            continue
        records, broken = parse_questions(reply)
        for _ in range(broken):
            build.drop("malformed")
        for rec in records:
            reason = check_question(rec, chunk.text)
            if reason is None and held_out.find(rec["question"])[1] is not None:
                reason = "close to a training question"
            if reason is None and seen.find(rec["question"])[1] is not None:
                reason = "duplicate"
            if reason:
                build.drop(reason)
                continue
            seen.add(rec["question"])
            build.questions.append(MCQuestion(rel, rec["question"], rec["correct"], rec["wrong"][:3],
                                              f"{chunk.doc}#{chunk.index}"))
    return build


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
        path.write_text(json.dumps(exam, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return exam


# --------------------------------------------------------------------------- scoring


_LETTERS = "ABCD"


def choose(responder: Any, conversation: list[dict[str, str]], options: Sequence[str]) -> int | None:
    """The option the model prefers: by log-likelihood in process, else by the letter it answers."""
    scores = responder.option_scores(conversation, options)
    if scores is not None:
        return max(range(len(options)), key=lambda i: scores[i])
    listing = "\n".join(f"{_LETTERS[i]}. {o}" for i, o in enumerate(options))
    prompt = [*conversation[:-1], {"role": "user", "content": f"{conversation[-1]['content']}\n\n{listing}\n\n"
                                   "Answer with the letter of the correct option only."}]
    reply = responder.answer([prompt], max_tokens=8)[0]
    m = re.search(r"\b([ABCD])\b", reply.upper())
    return _LETTERS.index(m.group(1)) if m else None


def score_model(responder: Any, questions: list[MCQuestion], system: str | None) -> list[dict[str, Any]]:
    from unfork.eval.answers import ask

    out = []
    for q in questions:
        options, right = q.options()
        picked = choose(responder, ask(q.question, system), options)
        out.append({"picked": None if picked is None else options[picked], "correct": picked == right})
    return out


def _manifest(dataset: Path) -> dict[str, Any]:
    path = dataset / "manifest.json"
    if not path.is_file():
        raise UserError(f"{dataset} is not a generated dataset (no manifest.json)",
                        hint="pass --data-path with a folder written by unfork data generate")
    return json.loads(path.read_text(encoding="utf-8"))


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


def dataset_of(model: str | None, data_path: str | Path | None) -> Path:
    """``--data-path``, else the dataset the trained run recorded, else the newest dataset."""
    if data_path:
        return Path(data_path)
    if model:
        run = Path(model)
        run = run.parent if run.name == "final" else run
        manifest = run / "data_manifest.json"
        if manifest.is_file():
            root = Path(json.loads(manifest.read_text(encoding="utf-8")).get("root", ""))
            if (root / "manifest.json").is_file():
                return root
    from unfork.paths import get_paths
    from unfork.train.data import find_data

    return find_data(None, get_paths().datasets_dir).root


def teacher_opener(judge_url: str | None, judge_model: str | None, api_key: str | None, stack: Any):
    """A function opening the async client that writes the exam: the given endpoint or the local teacher."""
    from unfork.client import ClientSettings, OpenAIClient

    def open_() -> tuple[Any, str | None]:
        if judge_url:
            return OpenAIClient(ClientSettings(judge_url, api_key=api_key, max_concurrency=8)), judge_model
        from unfork.config import load_config
        from unfork.serve.launch import running_server

        ep = stack.enter_context(running_server(judge_model or load_config().models.teacher, parallel=4,
                                                ctx_size=4 * 2048))
        return OpenAIClient(ClientSettings(ep.base_url, api_key=ep.api_key, max_concurrency=4)), ep.model

    return open_


def run_knowledge(model: str, base_model: str, *, data_path: str | Path | None = None,
                  judge_url: str | None = None, judge_model: str | None = None, api_key: str | None = None,
                  output_dir: Path | None = None, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Base against trained on the exam of the dataset's knowledge documents (written once by the teacher)."""
    import contextlib

    from unfork.eval.answers import open_responder

    dataset = dataset_of(model, data_path)
    with contextlib.ExitStack() as stack:
        exam = load_or_build_exam(dataset, teacher_opener(judge_url, judge_model, api_key, stack), echo=echo)
    questions = [MCQuestion(**q) for q in exam["questions"]]
    if not questions:
        dropped = ", ".join(f"{n} {why}" for why, n in exam.get("dropped", {}).items()) or "no knowledge leaf"
        raise UserError(f"no usable knowledge question for {dataset} ({dropped})",
                        hint="the knowledge benchmark needs knowledge leaves and a teacher that follows the format")
    system = str(_manifest(dataset).get("pipeline", {}).get("mix", {}).get("system_prompt") or "") or None
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
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "knowledge.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n",
                                                         encoding="utf-8")
    return result
