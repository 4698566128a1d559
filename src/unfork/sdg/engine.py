"""Running a pipeline over taxonomy leaves: concurrent, journaled, resumable.

Work is cut into *units*: unit ``n`` of a leaf starts from one empty row and
goes through the flow's steps (each unit has its own seed, so a rerun asks the
teacher exactly the same things). Units of all leaves run at the same time,
as many as keep ``concurrency`` requests in flight; each finished unit is
journaled at once (:mod:`unfork.sdg.journal`), every teacher reply is logged
as it arrives, and a leaf stops starting units once it has its target of
accepted samples or has used its budget of units.

A rerun with the same leaf, pipeline and teacher finds the leaf's folder in
the cache (its key hashes all three), skips finished units, replays logged
replies for unfinished ones and starts only what is missing.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unfork.client.base import FatalClientError
from unfork.fsio import atomic_write_text
from unfork.sdg.journal import Journal, RequestLog
from unfork.sdg.pipeline import Pipeline, PipelineError
from unfork.sdg.steps import DedupStep, Reply, Step, Unit, reject
from unfork.sdg.teacher import Teacher
from unfork.taxonomy.leaf import Leaf
from unfork.tokens import estimate_tokens


@dataclass
class LeafResult:
    leaf: Leaf
    key: str
    folder: Path
    accepted: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    units: int = 0
    reused: bool = False  # nothing had to be generated
    error: str | None = None
    hint: str | None = None  # what to do about ``error``, when its cause said
    requests: int = 0
    replayed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the knowledge chunks

    def reasons(self) -> Counter:
        return Counter(r.get("reason", "?") for r in self.rejected)


def request_key(messages: list[dict[str, str]], params: dict[str, Any], model: str) -> str:
    blob = json.dumps([messages, params, model], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def unit_seed(seed: int, leaf: Leaf, unit: int) -> int:
    return int(hashlib.sha256(f"{seed}:{leaf.content_hash}:{unit}".encode()).hexdigest()[:8], 16)


class LeafRun:
    """One leaf's steps, journal, request log and counters."""

    def __init__(self, leaf: Leaf, pipeline: Pipeline, teacher: Teacher, folder: Path, *, target: int,
                 seed: int, key: str):
        self.leaf, self.teacher, self.folder, self.seed = leaf, teacher, folder, seed
        self.flow = pipeline.flows[leaf.flow]
        self.steps: list[Step] = pipeline.build_steps(leaf.flow)
        self.columns = leaf.columns  # the leaf's, plus what loading adds (documents)
        self.journal = Journal(folder / "journal.jsonl")
        self.log = RequestLog(folder / "requests.jsonl")
        self.result = LeafResult(leaf, key, folder)
        self.target = target
        self.max_units = max(2, math.ceil(target / max(0.1, self.flow.samples_per_unit) * self.flow.max_units_factor))
        self.in_flight = 0

    @property
    def accepted(self) -> int:
        return len(self.result.accepted)

    def load(self) -> None:
        self.result.accepted = self.journal.samples("accepted")
        self.result.rejected = self.journal.samples("rejected")
        self.result.units = len(self.journal.units)
        chunks = self.folder / "chunks.json"
        if chunks.is_file():  # a reused leaf still gives its chunks (RAFT distractors, passages) to the dataset
            self.result.extra["chunks"] = json.loads(chunks.read_text(encoding="utf-8"))

    def pending_units(self) -> list[int]:
        return [u for u in range(self.max_units) if u not in self.journal.units]

    def wants_more(self, margin: bool = False) -> bool:
        """Start another unit? Counts on the running ones yielding what finished ones did on average (the
        flow's ``samples_per_unit`` until two have finished); a unit that falls short is followed by another.

        With ``margin`` (the teacher has nothing queued, so another unit delays no other work), counts on
        them yielding as little as the worst finished one (before two have finished: on one of them
        yielding nothing). Units yield unevenly, and a leaf whose last units fall short would otherwise learn
        it only when they end, then run one more unit almost alone at the end of the run."""
        units = self.result.units
        per_unit = self.accepted / units if units >= 2 else self.flow.samples_per_unit
        if not margin:
            counted = self.in_flight * per_unit
        elif units >= 2:
            worst = min(sum(r["status"] == "accepted" for r in records) for records in self.journal.units.values())
            counted = self.in_flight * worst
        else:
            counted = max(0, self.in_flight - 1) * per_unit
        return self.accepted + counted < self.target

    def prepare(self, columns: dict[str, Any]) -> None:
        for step in self.steps:
            step.prepare(columns, self.teacher.context_window)
            if isinstance(step, DedupStep):
                step.prime([s["row"] for s in self.result.accepted])
            chunks = getattr(step, "chunks", None)
            if chunks is not None:
                self.result.extra["chunks"] = [c.text for c in chunks]
                atomic_write_text(self.folder / "chunks.json",
                                  json.dumps(self.result.extra["chunks"], ensure_ascii=False))

    async def ask(self, messages: list[dict[str, str]], *, temperature: float, max_tokens: int, seed: int,
                  choices: int = 1) -> Reply:
        params = {"temperature": temperature, "max_tokens": max_tokens, "seed": seed}
        if choices > 1:
            params["n"] = choices
        key = request_key(messages, params, self.teacher.model)
        logged = self.log.get(key)
        if logged is not None:
            self.result.replayed += 1
            others = [(t, f) for t, f in logged.get("others") or []]
            return Reply(logged.get("text", ""), logged.get("finish_reason"), key, others=others)
        too_long = await self._too_long(messages, max_tokens)
        if too_long:
            return Reply(key=key, error=too_long)
        from unfork.client import ClientError, ContextOverflowError

        self.result.requests += 1
        started = time.time()
        try:
            res = await self.teacher.chat(messages, **params)
        except ContextOverflowError as exc:
            return Reply(key=key, error=f"prompt too long for the teacher: {exc.message}", cause=exc)
        except FatalClientError:
            raise
        except ClientError as exc:
            return Reply(key=key, error=f"teacher error: {exc.message}", cause=exc)
        (text, finish), *others = res.choices
        entry = {"text": text, "finish_reason": finish,
                 "usage": {"prompt": res.usage.prompt_tokens, "completion": res.usage.completion_tokens},
                 "started": round(started, 3), "seconds": round(time.time() - started, 3)}
        if others:
            entry["others"] = others
        self.log.put(key, entry)
        return Reply(text, finish, key, others=others)

    async def _too_long(self, messages: list[dict[str, str]], max_tokens: int) -> str | None:
        window = self.teacher.context_window
        if not window:
            return None
        text = "\n".join(m["content"] for m in messages)
        overhead = 8 * len(messages) + 16
        budget = window - max_tokens
        if estimate_tokens(text) + overhead <= 0.8 * budget:
            return None  # clearly fits: no need to ask the server
        exact = await self.teacher.count_tokens(text)
        count = (exact if exact is not None else estimate_tokens(text)) + overhead
        if count > budget:
            how = "" if exact is not None else " (estimated)"
            return f"prompt too long: {count} tokens{how} + {max_tokens} to generate > context window {window}"
        return None

    async def run_unit(self, u: int, start: dict[str, Any] | None = None, seed: int | None = None,
                       ask: Any = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Unit ``u`` from the row ``start`` (default: an empty one), with ``seed`` (default: the unit's own)."""
        seed = unit_seed(self.seed, self.leaf, u) if seed is None else seed
        unit = Unit(u, random.Random(seed), self.columns, ask or self.ask, seed % (2**31))
        rows: list[dict[str, Any]] = [dict(start or {})]
        rejected: list[dict[str, Any]] = []
        for step in self.steps:
            if not rows:
                break
            try:
                rows, bad = await step.run(rows, unit)
            except FatalClientError:
                raise
            except Exception as exc:  # noqa: BLE001 - a broken step must not lose the unit's other rows
                bad = [reject(step.spec.name, f"step failed: {type(exc).__name__}: {exc}", r) for r in rows]
                rows = []
            rejected += bad
        accepted = [{"status": "accepted", "row": r} for r in rows]
        return accepted, rejected

    def finish_unit(self, u: int, accepted: list[dict[str, Any]], rejected: list[dict[str, Any]]) -> None:
        self.journal.append_unit(u, accepted + rejected)
        self.result.accepted += [{"unit": u, **a} for a in accepted]
        self.result.rejected += [{"unit": u, **r} for r in rejected]
        self.result.units += 1

    def close(self) -> None:
        self.journal.close()
        self.log.close()


def open_run(leaf: Leaf, pipeline: Pipeline, teacher: Teacher, cache_root: Path, settings: dict[str, Any], *,
             target: int, seed: int) -> LeafRun:
    """The leaf's run in its cache folder (keyed by the leaf, the pipeline and ``settings``), journal loaded."""
    key = leaf.cache_key(pipeline.hash, settings)
    run = LeafRun(leaf, pipeline, teacher, cache_root / key, target=target, seed=seed, key=key)
    (cache_root / key).mkdir(parents=True, exist_ok=True)
    atomic_write_text(cache_root / key / "leaf.json", json.dumps(
        {"leaf": leaf.rel, "flow": leaf.flow, "content_hash": leaf.content_hash, "pipeline": pipeline.name,
         "pipeline_hash": pipeline.hash, **settings}, indent=2) + "\n")
    run.load()
    return run


@dataclass
class PlannedUnit:
    """A unit whose first row (the flow's ``inputs``) and seed the caller chose, e.g. one per document chunk."""

    index: int
    row: dict[str, Any]
    seed: int


@dataclass
class UnitOutcome:
    accepted: list[dict[str, Any]]  # the rows that passed every step, in order
    failures: list[Reply] = field(default_factory=list)  # teacher requests that failed; the unit is not journaled


async def run_planned(run: LeafRun, units: list[PlannedUnit], slots: asyncio.Semaphore) -> dict[int, UnitOutcome]:
    """Run the given units of one leaf; a journaled unit is read back instead, and one whose teacher request
    failed (fatal errors included) is left out of the journal, so a rerun asks only for what is missing."""

    async def one(p: PlannedUnit) -> UnitOutcome:
        done = run.journal.units.get(p.index)
        if done is not None:
            return UnitOutcome([r["row"] for r in done if r.get("status") == "accepted"])
        failures: list[Reply] = []

        async def ask(*args: Any, **kwargs: Any) -> Reply:
            try:
                reply = await run.ask(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - a failed request costs its unit, not the whole run
                reply = Reply(error=f"teacher error: {exc}", cause=exc)
            if reply.error:
                failures.append(reply)
            return reply

        async with slots:
            accepted, rejected = await run.run_unit(p.index, p.row, p.seed, ask)
        if not failures:
            run.finish_unit(p.index, accepted, rejected)
        return UnitOutcome([a["row"] for a in accepted], failures)

    run.prepare(run.columns)
    outcomes = await asyncio.gather(*(one(p) for p in units))
    return {p.index: o for p, o in zip(units, outcomes, strict=True)}


Progress = Callable[[LeafResult, int, bool], None]  # (result, target, finished)


async def generate(leaves: list[Leaf], pipeline: Pipeline, teacher: Teacher, *, target: int, concurrency: int,
                   seed: int, cache_root: Path, documents: Callable[[Leaf], list[Any]] | None = None,
                   progress: Progress | None = None, units_in_flight: int | None = None,
                   knowledge_target: int | None = None,
                   leaf_target: Callable[[Leaf], int] | None = None) -> list[LeafResult]:
    """Generate up to ``target`` accepted samples per leaf (``knowledge_target`` for knowledge leaves, when
    given, else ``leaf_target(leaf)`` when given); return each leaf's result.

    ``units_in_flight`` (default: twice the teacher's slots over all its
    endpoints, at least ``concurrency``, plus 2) bounds the units running at
    once over all leaves; the teacher bounds the sequences decoded at once.
    Twice, because with as many units as slots one leaf whose units share a
    prompt can take every slot at the start, and the freed slots then have only
    its held prompts to take and compute them again.
    """
    await teacher.setup()
    runs = []
    for leaf in leaves:
        settings = {"seed": seed, "teacher": teacher.model}  # not the concurrency or window: a rerun may change them
        goal = leaf_target(leaf) if leaf_target else knowledge_target if leaf.is_knowledge and knowledge_target \
            else target
        inputs = pipeline.flows[leaf.flow].inputs if leaf.flow in pipeline.flows else []
        if inputs:
            raise PipelineError(f"pipeline '{pipeline.name}': flow '{leaf.flow}' needs {', '.join(inputs)} from "
                                "its caller, so data generation cannot run it")
        runs.append(open_run(leaf, pipeline, teacher, cache_root, settings, target=goal, seed=seed))
    slots = asyncio.Semaphore(units_in_flight or 2 * max(1, concurrency, teacher.capacity) + 2)
    leaf_tasks = [asyncio.ensure_future(_run_leaf(run, slots, documents, progress)) for run in runs]
    try:
        await asyncio.gather(*leaf_tasks)
    finally:
        await cancel_all(leaf_tasks)  # the other leaves stop before their journals close
        for run in runs:
            run.close()
    return [run.result for run in runs]


async def cancel_all(tasks: Any) -> None:
    """Cancel ``tasks`` and wait for them to end, so none runs on or ends with an error nobody retrieved."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _run_leaf(run: LeafRun, slots: asyncio.Semaphore, documents: Callable[[Leaf], list[Any]] | None,
                    progress: Progress | None) -> None:
    result = run.result
    pending = run.pending_units()
    if not run.wants_more() or not pending:
        result.reused = True
        if progress:
            progress(result, run.target, True)
        return
    stage = ""
    try:
        columns = dict(run.columns)
        if run.leaf.is_knowledge:
            if documents is None:
                raise RuntimeError("no document loader for a knowledge leaf")
            stage = "its documents could not be fetched: "
            columns["documents"] = await asyncio.to_thread(documents, run.leaf)
            stage = ""
        run.columns = columns
        run.prepare(columns)
    except Exception as exc:  # noqa: BLE001 - reported per leaf, the other leaves go on
        result.error = stage + (getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}")
        result.hint = getattr(exc, "hint", None)
        if progress:
            progress(result, run.target, True)
        return
    if progress:
        progress(result, run.target, False)
    tasks: set[asyncio.Task] = set()
    failed: list[BaseException] = []  # a unit's error (a fatal one), raised here: nothing may end unretrieved

    def settled(task: asyncio.Task) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            failed.append(task.exception())

    async def one(u: int) -> None:
        try:
            accepted, rejected = await run.run_unit(u)
            run.finish_unit(u, accepted, rejected)
        finally:
            run.in_flight -= 1
            slots.release()
        if progress:
            progress(result, run.target, False)

    queue = collections.deque(pending)
    margin = False  # the teacher has room: a slot ended with no request waiting
    try:
        while queue:
            await slots.acquire()
            if failed:
                slots.release()
                break
            if not run.wants_more(margin=margin and not run.teacher.queued):
                slots.release()
                if not tasks:
                    break  # the target is reached
                # until a unit finishes (maybe it fell short and more are needed) or the teacher has room
                spare = asyncio.ensure_future(run.teacher.wait_spare())
                try:
                    await asyncio.wait({*tasks, spare}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    spare.cancel()
                margin = spare.done() and not spare.cancelled()
                continue
            run.in_flight += 1
            task = asyncio.create_task(one(queue.popleft()))
            tasks.add(task)
            task.add_done_callback(settled)
            await asyncio.sleep(0)  # the other leaves' turn: the teacher's queue gets their prompts in between
        if tasks and not failed:
            await asyncio.gather(*tasks)
        if failed:
            raise failed[0]
    finally:
        await cancel_all(tasks)
    if progress:
        progress(result, run.target, True)
