"""A small dataset end to end with a real teacher (Qwen2.5-Coder-0.5B on llama.cpp). Slow.

Skipped when llama-server is not built or the model is not downloaded (in CI
the model is required: ``real_model_file`` fails there instead).
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import real_model_file
from unfork.taxonomy.examples import prepare_example_taxonomy

pytestmark = [pytest.mark.slow, pytest.mark.llama]


@pytest.fixture(scope="module")
def teacher():
    from unfork.errors import UserError
    from unfork.serve.llama_cpp import find_llama_server

    try:
        find_llama_server()
    except UserError:
        pytest.skip("llama-server is not built: run scripts/build_llama_cpp.sh")
    gguf = real_model_file("qwen2.5-coder-0.5b-instruct")
    from unfork.serve.launch import running_server

    # as `unfork data generate` starts its teacher: each slot with a context of its own
    with running_server(str(gguf), backend="llama-cpp", parallel=2, slot_ctx=2048) as ep:
        yield ep


def test_each_slot_has_its_own_share_of_the_context(teacher):
    import httpx

    props = httpx.get(teacher.base_url.removesuffix("/v1") + "/props", timeout=30,
                      headers={"Authorization": f"Bearer {teacher.api_key}"}).json()
    assert props["default_generation_settings"]["n_ctx"] == 2048  # 4096 over 2 slots


def short_pipeline(dest):
    """The built-in simple pipeline with fewer, shorter answers per request, 2 choices each: CI has two cores."""
    import yaml

    from unfork.sdg.pipeline import BUILTIN_DIR

    shutil.copytree(BUILTIN_DIR / "simple", dest)
    data = yaml.safe_load((dest / "pipeline.yaml").read_text())
    for flow in data["flows"].values():
        for step in flow["steps"]:
            if step["type"] == "llm":
                step.update(n=2, max_tokens=200, choices=2)
    (dest / "pipeline.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return dest


def test_simple_pipeline_makes_a_real_dataset_and_reuses_it(teacher, tmp_path):
    from unfork.config import GenerateConfig
    from unfork.sdg.run import GenerateRequest, generate_dataset

    taxonomy = prepare_example_taxonomy(tmp_path / "taxonomy")
    shutil.rmtree(taxonomy / "compositional_skills" / "grounded")  # keep the run short: one skill, one knowledge leaf
    req = GenerateRequest(taxonomy=taxonomy, base="empty", output_dir=tmp_path / "ds")
    cfg = GenerateConfig(pipeline=str(short_pipeline(tmp_path / "pipe")), num_samples=2, max_concurrency=2,
                         endpoint_urls=[teacher.base_url], endpoint_model=teacher.model, api_key=teacher.api_key,
                         seed=1)
    out, manifest = generate_dataset(req, cfg, show_progress=False, echo=lambda *_: None)
    leaves = {leaf["leaf"]: leaf for leaf in manifest.leaves}
    assert set(leaves) == {"compositional_skills/writing/freeform/haiku", "knowledge/geography/islands/marrowvey"}
    assert all(leaf["error"] is None for leaf in leaves.values())
    assert sum(leaf["accepted"] for leaf in leaves.values()) >= 2, leaves
    lines = [json.loads(x) for x in (out / "train_all.jsonl").read_text().splitlines()]
    assert lines and all([m["role"] for m in x["messages"]] == ["system", "user", "assistant"] for x in lines)
    assert all(x["messages"][2]["content"].strip() for x in lines)
    # Generated samples name their teacher; the documents' own paragraphs name the document.
    assert {x["metadata"]["teacher"] for x in lines} == {teacher.model, "document"}
    assert all((x["metadata"]["teacher"] == "document") == (x["metadata"]["format"] == "passage") for x in lines)
    assert manifest.stats["teacher"]["completion_tokens"] > 0
    # Every request asked for 2 choices of one prompt, and llama.cpp wrote both (logged as the first + "others").
    from unfork.paths import get_paths

    logged = [json.loads(line) for leaf in leaves.values()
              for line in (get_paths().cache_dir / "sdg" / leaf["cache_key"] / "requests.jsonl").read_text().splitlines()]
    assert logged and all(len(entry.get("others", [])) == 1 for entry in logged), logged
    # Second run: same leaves, pipeline and teacher, so nothing is asked again.
    req.output_dir = tmp_path / "ds2"
    _, again = generate_dataset(req, cfg, show_progress=False, echo=lambda *_: None)
    assert all(leaf["reused"] for leaf in again.leaves)
    assert again.stats["teacher"]["requests"] == 0
