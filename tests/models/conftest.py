"""Fixtures for the model store tests: a private UNFORK_HOME and a tiny fake catalog entry."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest

from unfork.models import catalog
from unfork.models.catalog import CatalogEntry, PypiPart


@pytest.fixture(autouse=True)
def unfork_home(unfork_home, tmp_path, monkeypatch):
    """The root fixture's private UNFORK_HOME, plus a private XDG cache (hides a real InstructLab cache)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return unfork_home


def gguf_bytes(kv: dict[str, object]) -> bytes:
    """A minimal GGUF v3 file: header and key/values, no tensors (strings and string arrays only)."""

    def s(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw

    out = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kv))
    for key, value in kv.items():
        out += s(key)
        if isinstance(value, list):
            out += struct.pack("<IIQ", 9, 8, len(value)) + b"".join(s(v) for v in value)
        elif isinstance(value, int):
            out += struct.pack("<IQ", 10, value)
        else:
            out += struct.pack("<I", 8) + s(str(value))
    return out


@pytest.fixture
def write_gguf():
    def write(path: Path, **extra: object) -> Path:
        kv: dict[str, object] = {"general.architecture": "llama", "tokenizer.ggml.model": "gpt2",
                                 "tokenizer.ggml.tokens": ["a", "b", "<|im_end|>"],
                                 "tokenizer.chat_template": "{{ messages }}"}
        kv.update(extra)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gguf_bytes(kv))
        return path

    return write


@pytest.fixture
def fake_entry(tmp_path, monkeypatch):
    """A catalog entry whose weights are three small part files; returns (entry, {dist: path})."""
    contents = [gguf_bytes({"general.architecture": "llama"}) + b"x" * 1000, b"y" * 3000, b"z" * 17]
    parts_dir = tmp_path / "parts"
    parts_dir.mkdir()
    files = {}
    for i, data in enumerate(contents, start=1):
        p = parts_dir / f"part{i:02d}.bin"
        p.write_bytes(data)
        files[f"fake-model-part{i}"] = p
    joined = b"".join(contents)
    entry = CatalogEntry(
        name="fake-tiny", role="student", format="gguf", file_name="fake-tiny.gguf", size=len(joined),
        sha256=hashlib.sha256(joined).hexdigest(), quantization="F32",
        parts=tuple(PypiPart(d, "1.0") for d in files), hf_repo="example/fake-tiny", hf_file="fake.gguf",
        license="test", provenance="made by the test")
    monkeypatch.setattr(catalog, "CATALOG", (*catalog.CATALOG, entry))
    return entry, files
