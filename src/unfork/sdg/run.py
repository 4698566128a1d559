"""``unfork data generate`` without the command line: leaves → teacher → dataset folder."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unfork.errors import UserError


@dataclass
class GenerateRequest:
    taxonomy: Path
    base: str
    pipeline: str = "full"
    num_samples: int = 30
    knowledge_samples: int | None = None  # per knowledge leaf; None: num_samples
    max_concurrency: int = 8
    endpoint_urls: list[str] = field(default_factory=list)
    model: str | None = None  # the name to send; default: the server's first model
    api_key: str | None = None
    teacher_model: str = ""  # catalog name or path, served locally when no endpoint is given
    output_dir: Path | None = None
    seed: int = 42
    ctx_per_slot: int = 2048
    request_timeout: float = 600.0
    mix: dict[str, Any] = field(default_factory=dict)  # overrides of the pipeline's ``mix:`` settings


class GenerationFailed(UserError):
    pass


def select_leaves(req: GenerateRequest, echo=print) -> list[Any]:
    """Changed (or all) leaves, validated; foundational skills skipped; refuses invalid ones."""
    from unfork.sdg.leaves import read_leaf
    from unfork.taxonomy.diff import taxonomy_diff
    from unfork.taxonomy.output import print_reports
    from unfork.taxonomy.validate import validate_files

    diff = taxonomy_diff(req.taxonomy, req.base)
    reports = validate_files(diff.leaves, req.taxonomy)
    bad = [r for r in reports if not r.ok]
    if bad:
        print_reports(bad, "text")
        raise UserError(f"{len(bad)} of the {len(reports)} leaves to generate from are not valid",
                        hint="fix them (unfork taxonomy validate), then run again")
    by_path = {r.path: r for r in reports}
    leaves = []
    for path in diff.leaves:
        rel = path.relative_to(req.taxonomy.resolve()) if path.is_relative_to(req.taxonomy.resolve()) else path
        rep = by_path.get(str(rel)) or by_path.get(str(path))
        if (rep is not None and rep.foundational) or "foundational_skills" in path.parts:
            echo(f"skipping foundational skill {rel}")
            continue
        leaves.append(read_leaf(path, req.taxonomy))
    if not leaves:
        raise UserError(f"no new or changed leaves against '{req.base}' in {req.taxonomy}",
                        hint="use --taxonomy-base empty to generate from every leaf")
    return leaves


@contextlib.contextmanager
def teacher_client(req: GenerateRequest, echo=print):
    """An OpenAI-compatible client and the model name: the given endpoints, or a local llama.cpp server."""
    from unfork.client import ClientSettings, MultiClient, OpenAIClient

    def client_for(urls: list[str], key: str | None, model: str | None):
        clients = [OpenAIClient(ClientSettings(u, api_key=key, max_concurrency=req.max_concurrency,
                                               timeout=req.request_timeout), model=model) for u in urls]
        return clients[0] if len(clients) == 1 else MultiClient(clients, model=model)

    if req.endpoint_urls:
        yield client_for(req.endpoint_urls, req.api_key, req.model), req.model
        return
    from unfork.serve.launch import running_server

    echo(f"Starting the teacher {req.teacher_model} ({req.max_concurrency} parallel slots) ...")
    with running_server(req.teacher_model, parallel=req.max_concurrency, slot_ctx=req.ctx_per_slot) as ep:
        yield client_for([ep.base_url], ep.api_key, ep.model), ep.model


async def first_model(client: Any) -> str:
    """The name the endpoint serves (the first of ``/v1/models``), for endpoints given without ``--model``."""
    models = await client.list_models()
    if not models:
        raise UserError(f"{client!r} lists no model", hint="pass --model NAME")
    return models[0].id


def generate_dataset(req: GenerateRequest, *, console: Any = None, show_progress: bool = True,
                     echo=print) -> tuple[Path, dict[str, Any]]:
    """Run the whole command; return the dataset folder and its manifest."""
    from unfork.paths import get_paths
    from unfork.sdg.engine import generate
    from unfork.sdg.leaves import load_documents
    from unfork.sdg.output import write_dataset
    from unfork.sdg.pipeline import load_pipeline
    from unfork.sdg.report import LiveProgress, explain_empty, summary_table, utilization
    from unfork.sdg.teacher import Teacher

    pipeline = load_pipeline(req.pipeline)
    if req.mix:  # how accepted samples become training lines; generation (and its cache) is unchanged
        pipeline = dataclasses.replace(pipeline, mix={**pipeline.mix, **req.mix})
    leaves = select_leaves(req, echo)
    paths = get_paths()
    out = req.output_dir or paths.datasets_dir / time.strftime("%Y%m%d-%H%M%S")
    cache_root = paths.cache_dir / "sdg"
    docs_cache = paths.cache_dir / "documents"
    goal = f"{req.num_samples} samples per leaf" + (f" ({req.knowledge_samples} per knowledge leaf)"
                                                    if req.knowledge_samples else "")
    echo(f"{len(leaves)} leaves, pipeline '{pipeline.name}', aiming for {goal}")
    started = time.monotonic()
    with teacher_client(req, echo) as (client, model):
        async def main():
            try:
                name = model or await first_model(client)
                teacher = Teacher(client, name)
                with LiveProgress(leaves, req.num_samples, console, show_progress,
                                  knowledge_target=req.knowledge_samples) as live:
                    results = await generate(
                        leaves, pipeline, teacher, target=req.num_samples, concurrency=req.max_concurrency,
                        seed=req.seed, cache_root=cache_root, knowledge_target=req.knowledge_samples,
                        documents=lambda leaf: load_documents(leaf, req.taxonomy, docs_cache), progress=live.update)
                return teacher, results
            finally:
                await client.aclose()

        teacher, results = asyncio.run(main())
        stats = {"seconds": round(time.monotonic() - started, 2), "teacher": utilization(teacher.busy),
                 "client": client.stats.as_dict(), "context_window": teacher.context_window}
    settings = {"taxonomy": str(req.taxonomy), "taxonomy_base": req.base, "pipeline": req.pipeline,
                "num_samples": req.num_samples, "knowledge_samples": req.knowledge_samples or req.num_samples,
                "max_concurrency": req.max_concurrency,
                "endpoint_urls": req.endpoint_urls or ["(local llama.cpp server)"], "seed": req.seed,
                "teacher_model": req.teacher_model if not req.endpoint_urls else teacher.model}
    manifest = write_dataset(out, results, pipeline, teacher=teacher.model, seed=req.seed, settings=settings,
                             stats=stats)
    if console is not None:
        summary_table(results, console)
    if not any(r.accepted for r in results):
        raise GenerationFailed(f"no sample was accepted, so the dataset in {out} is empty. Why:\n  "
                               + explain_empty(results),
                               hint="see leaves/*/rejected.jsonl for every rejection with the teacher's raw text")
    return out, manifest
