"""``unfork data generate`` without the command line: leaves → teacher → dataset folder."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unfork.errors import UserError

if TYPE_CHECKING:
    from unfork.config import GenerateConfig
    from unfork.contracts import DatasetManifest
    from unfork.documents.convert import Document
    from unfork.taxonomy.leaf import Leaf
    from unfork.taxonomy.messages import FileReport


@dataclass
class GenerateRequest:
    """What one generation run works on; how it generates is the ``generate`` config section."""

    taxonomy: Path
    base: str
    teacher: str = ""  # catalog name or path, served locally when no endpoint is given
    output_dir: Path | None = None


class GenerationFailed(UserError):
    pass


class InvalidLeaves(UserError):
    """Leaves that failed validation; the command line prints their reports before this message."""

    def __init__(self, reports: list[FileReport], checked: int):
        super().__init__(f"{len(reports)} of the {checked} leaves to generate from are not valid",
                         hint="fix them (unfork taxonomy validate), then run again")
        self.reports = reports


def select_leaves(req: GenerateRequest, echo=print, leaves: list[Leaf] | None = None) -> list[Leaf]:
    """The changed (or all) leaves, or ``leaves`` the caller validated, without the foundational skills.

    Finding them validates them; invalid ones raise :class:`InvalidLeaves`.
    """
    if leaves is None:
        from unfork.taxonomy.diff import taxonomy_diff
        from unfork.taxonomy.leaf import check_leaves

        checked = check_leaves(taxonomy_diff(req.taxonomy, req.base).leaves, req.taxonomy)
        bad = [report for report, _ in checked if not report.ok]
        if bad:
            raise InvalidLeaves(bad, len(checked))
        leaves = [leaf for _, leaf in checked if leaf is not None]
    kept = []
    for leaf in leaves:
        if leaf.foundational:
            echo(f"skipping foundational skill {leaf.rel_path}")
        else:
            kept.append(leaf)
    if not kept:
        raise UserError(f"no new or changed leaves against '{req.base}' in {req.taxonomy}",
                        hint="use --taxonomy-base empty to generate from every leaf")
    return kept


def leaf_documents(leaf: Leaf, taxonomy: Path, cache_dir: Path | None = None) -> list[Document]:
    """Fetch a knowledge leaf's documents (``document.repo`` at ``document.commit``)."""
    from unfork.documents.fetch import fetch_documents

    ref = leaf.document
    if ref is None:
        raise UserError(f"{leaf.rel} names no documents: it is not a knowledge leaf")
    return fetch_documents(ref.repo, ref.commit, list(ref.patterns), taxonomy_root=taxonomy, cache_dir=cache_dir)


@contextlib.contextmanager
def teacher_client(cfg: GenerateConfig, teacher: str, echo=print):
    """An OpenAI-compatible client and the model name: the given endpoints, or ``teacher`` on a local server."""
    from unfork.client import ClientSettings, MultiClient, OpenAIClient

    def client_for(urls: list[str], key: str | None, model: str | None):
        clients = [OpenAIClient(ClientSettings(u, api_key=key, max_concurrency=cfg.max_concurrency,
                                               timeout=cfg.request_timeout), model=model) for u in urls]
        return clients[0] if len(clients) == 1 else MultiClient(clients, model=model)

    if cfg.endpoint_urls:
        model = cfg.endpoint_model or None
        yield client_for(cfg.endpoint_urls, cfg.api_key or None, model), model
        return
    from unfork.serve.launch import running_server

    echo(f"Starting the teacher {teacher} ({cfg.max_concurrency} parallel slots) ...")
    with running_server(teacher, parallel=cfg.max_concurrency, slot_ctx=cfg.ctx_per_slot) as ep:
        yield client_for([ep.base_url], ep.api_key, ep.model), ep.model


async def first_model(client: Any) -> str:
    """The name the endpoint serves (the first of ``/v1/models``), for endpoints given without a model name."""
    models = await client.list_models()
    if not models:
        raise UserError(f"{client!r} lists no model", hint="pass --endpoint-model NAME")
    return models[0].id


def seed_examples(leaf: Leaf) -> int:
    """The seed examples written in the leaf's qna.yaml (a knowledge example holds several questions)."""
    return len(leaf.knowledge_seeds) if leaf.is_knowledge else len(leaf.seeds)


def per_seed_target(samples_per_seed: int):  # noqa: ANN201
    """Each leaf's goal when it counts per seed example, as ilab's scale factor does; None when it does not."""
    if not samples_per_seed:
        return None
    return lambda leaf: samples_per_seed * max(1, seed_examples(leaf))


def generate_dataset(req: GenerateRequest, cfg: GenerateConfig, *, console: Any = None, show_progress: bool = True,
                     echo=print, leaves: list[Leaf] | None = None) -> tuple[Path, DatasetManifest]:
    """Run the whole command with the ``generate`` settings ``cfg``; return the dataset folder and its manifest.

    The folder, ``req.output_dir`` or a new one in the datasets folder, is this run's alone while it writes.
    """
    from unfork.fsio import run_folder
    from unfork.paths import get_paths

    with run_folder(req.output_dir, get_paths().datasets_dir, time.strftime("%Y%m%d-%H%M%S")) as out:
        return _generate_into(out, req, cfg, console=console, show_progress=show_progress, echo=echo, leaves=leaves)


def _generate_into(out: Path, req: GenerateRequest, cfg: GenerateConfig, *, console: Any, show_progress: bool,
                   echo, leaves: list[Leaf] | None) -> tuple[Path, DatasetManifest]:
    from unfork.paths import get_paths
    from unfork.sdg.engine import generate
    from unfork.sdg.output import write_dataset
    from unfork.sdg.pipeline import load_pipeline
    from unfork.sdg.report import LiveProgress, empty_hint, explain_empty, summary_table, utilization
    from unfork.sdg.teacher import Teacher

    pipeline = load_pipeline(cfg.pipeline)
    if cfg.mix:  # how accepted samples become training lines; generation (and its cache) is unchanged
        pipeline = dataclasses.replace(pipeline, mix={**pipeline.mix, **cfg.mix})
    leaves = select_leaves(req, echo, leaves)
    paths = get_paths()
    cache_root = paths.cache_dir / "sdg"
    docs_cache = paths.cache_dir / "documents"
    knowledge_samples = cfg.knowledge_samples or None
    goal = f"{cfg.num_samples} samples per leaf" + (f" ({knowledge_samples} per knowledge leaf)"
                                                    if knowledge_samples else "")
    leaf_target = per_seed_target(cfg.samples_per_seed)
    if leaf_target is not None:
        goal = f"{cfg.samples_per_seed} samples per seed example ({sum(map(leaf_target, leaves))} in all)"
    echo(f"{len(leaves)} leaves, pipeline '{pipeline.name}', aiming for {goal}")
    started = time.monotonic()
    with teacher_client(cfg, req.teacher, echo) as (client, model):
        async def main():
            try:
                name = model or await first_model(client)
                teacher = Teacher(client, name)
                with LiveProgress(leaves, cfg.num_samples, console, show_progress,
                                  knowledge_target=knowledge_samples, leaf_target=leaf_target) as live:
                    results = await generate(
                        leaves, pipeline, teacher, target=cfg.num_samples, concurrency=cfg.max_concurrency,
                        seed=cfg.seed, cache_root=cache_root, knowledge_target=knowledge_samples,
                        documents=lambda leaf: leaf_documents(leaf, req.taxonomy, docs_cache), progress=live.update,
                        leaf_target=leaf_target)
                return teacher, results
            finally:
                await client.aclose()

        teacher, results = asyncio.run(main())
        stats = {"seconds": round(time.monotonic() - started, 2), "teacher": utilization(teacher.busy),
                 "client": client.stats.as_dict(), "context_window": teacher.context_window}
    from unfork.client.base import redact_url  # the manifest is shared: no password in it

    settings = {"taxonomy": str(req.taxonomy), "taxonomy_base": req.base, "pipeline": cfg.pipeline,
                "num_samples": cfg.num_samples, "knowledge_samples": knowledge_samples or cfg.num_samples,
                "samples_per_seed": cfg.samples_per_seed,
                "max_concurrency": cfg.max_concurrency,
                "endpoint_urls": [redact_url(u) for u in cfg.endpoint_urls] or ["(local llama.cpp server)"],
                "seed": cfg.seed,
                "teacher_model": req.teacher if not cfg.endpoint_urls else teacher.model}
    manifest = write_dataset(out, results, pipeline, teacher=teacher.model, seed=cfg.seed, settings=settings,
                             stats=stats)
    if console is not None:
        summary_table(results, console)
    if not any(r.accepted for r in results):
        raise GenerationFailed(f"no sample was accepted, so the dataset in {out} is empty. Why:\n  "
                               + explain_empty(results), hint=empty_hint(results))
    return out, manifest
