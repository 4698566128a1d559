"""Conversions between GGUF files and Hugging Face (safetensors) folders.

* GGUF -> HF (:func:`hf_from_gguf`): the student must be a transformers folder to
  train. transformers reads the GGUF (dequantizing it), then the quantizer it
  leaves attached is dropped so ``save_pretrained`` writes plain safetensors.
  The result is cached in the store as ``<name>-hf/`` with the SHA-256 of the
  GGUF it came from, so it is done once.
* HF -> GGUF (:func:`gguf_from_hf`): a trained student is served by llama.cpp,
  so it is written back with llama.cpp's own ``convert_hf_to_gguf.py`` (from
  the llama.cpp source vendored in the ``llama-cpp-python`` sdist), which
  writes the tokenizer llama.cpp expects (BPE ``gpt2`` for SmolLM2 and Qwen).
  K-quants go through ``llama-quantize`` when it is built.

Both take a model already resolved (:mod:`unfork.models.resolve` turns names
into models and calls these). torch, transformers and gguf are imported inside
the functions that need them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from unfork.errors import MissingExtraError, UserError
from unfork.fsio import atomic_folder, atomic_path
from unfork.models import catalog, llama_tools
from unfork.models.llama_tools import LLAMA_CPP_PYTHON_VERSION
from unfork.models.store import (
    MANIFEST,
    Echo,
    ResolvedModel,
    chat_template_of,
    echo_stderr,
    folder_size,
    hf_dir,
    models_dir,
    now,
    read_manifest,
    sha256_file,
    write_manifest,
)

# Types convert_hf_to_gguf.py writes itself; the others need llama-quantize.
CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")
QUANTIZE_TYPES = ("q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m",
                  "q5_k_s", "q5_k_m", "q6_k")
OUTTYPES = CONVERTER_TYPES + QUANTIZE_TYPES


class ConversionError(UserError):
    pass


def _need(module: str, package: str, extra: str, purpose: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(package, extra, purpose) from None


# --------------------------------------------------------------------------- GGUF -> HF


def gguf_to_hf(gguf_path: Path, out: Path, *, dtype: str = "bfloat16") -> Path:
    """Write the GGUF model at ``gguf_path`` as a safetensors folder ``out`` (tokenizer included).

    The folder appears only when complete (written beside it, then renamed).
    """
    torch = _need("torch", "torch", "convert", "Converting a GGUF model to a Hugging Face folder")
    transformers = _need("transformers", "transformers", "convert",
                         "Converting a GGUF model to a Hugging Face folder")
    _need("gguf", "gguf", "convert", "Reading GGUF files with transformers")
    _need("accelerate", "accelerate", "convert", "Loading GGUF files with transformers")
    if dtype not in ("bfloat16", "float16", "float32"):
        raise UserError(f"unknown dtype '{dtype}'", hint="one of: bfloat16, float16, float32")

    gguf_path = Path(gguf_path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # Dequantize to float32 (transformers' fastest GGUF path), then cast once.
    model = transformers.AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    # transformers keeps a GGUF quantizer attached and refuses to save; the
    # weights are already plain dequantized tensors, so drop the marker.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model = model.to(getattr(torch, dtype))
    if not tokenizer.chat_template:
        template = chat_template_of(gguf_path, "gguf")
        if template:
            tokenizer.chat_template = template

    with atomic_folder(Path(out), markers=(MANIFEST, "config.json")) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return Path(out)


def cached_hf(entry: catalog.CatalogEntry) -> ResolvedModel | None:
    """The store's Hugging Face folder of a catalog model, when made from its pinned GGUF or the hub."""
    folder = hf_dir(entry.name)
    manifest = read_manifest(folder) or {}
    if (folder / "config.json").is_file() and (
            manifest.get("source_sha256") == entry.sha256 or str(manifest.get("source", "")).startswith("hf:")):
        return ResolvedModel(entry.name, folder, "hf", chat_template_of(folder, "hf"), entry)
    return None


def hf_from_gguf(src: ResolvedModel, entry: catalog.CatalogEntry | None, *, dtype: str = "bfloat16",
                 force: bool = False, echo: Echo = echo_stderr) -> ResolvedModel:
    """A Hugging Face folder for the resolved GGUF ``src``, converting it once and caching it.

    Catalog models land in ``<models dir>/<name>-hf/``; other GGUF files in
    ``<models dir>/<file stem>-hf/``. A cached folder is reused while its
    manifest's ``source_sha256`` matches the GGUF.
    """
    if entry is not None:
        out, source_sha = hf_dir(entry.name), entry.sha256
    else:
        out = models_dir() / f"{src.path.stem}-hf"
        source_sha = sha256_file(src.path)
        manifest = read_manifest(out) or {}
        if not force and manifest.get("source_sha256") == source_sha and (out / "config.json").is_file():
            return ResolvedModel(src.name, out, "hf", chat_template_of(out, "hf"))

    echo(f"Converting {src.path.name} to a Hugging Face folder (once; 30-120 s) ...")
    start = time.monotonic()
    gguf_to_hf(src.path, out, dtype=dtype)
    write_manifest(out, {
        "name": out.name,
        "format": "hf",
        "file": None,
        "source": f"converted from {src.path.name}",
        "source_sha256": source_sha,
        "sha256": None,
        "size": folder_size(out),
        "date": now(),
        "role": entry.role if entry else "",
        "dtype": dtype,
        "seconds": round(time.monotonic() - start, 1),
    })
    return ResolvedModel(src.name, out, "hf", chat_template_of(out, "hf"), entry)


# --------------------------------------------------------------------------- fetching llama.cpp's converter


# Only what the converter needs from the vendored tree.
_CONVERTER_MEMBERS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "LICENSE")


def fetch_converter(dest_dir: Path | None = None, *, echo: Echo = echo_stderr) -> Path:
    """Download the llama-cpp-python sdist from PyPI and unpack llama.cpp's converter.

    Writes ``<dest_dir>/src/convert_hf_to_gguf.py`` (with ``conversion/`` and
    ``gguf-py/``); the default ``dest_dir`` is ``<unfork cache>/llama.cpp``.
    """
    from unfork.paths import get_paths

    dest_dir = dest_dir or get_paths().cache_dir / "llama.cpp"
    echo(f"Fetching llama.cpp's converter from the llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} "
         "sdist on PyPI (77 MB) ...")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check",
               f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}", "-d", tmp]
        if subprocess.run(cmd, check=False).returncode != 0:
            raise ConversionError("could not download the llama-cpp-python sdist from PyPI",
                                  hint="run scripts/build_llama_cpp.sh, or set UNFORK_LLAMA_CPP_DIR")
        sdists = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if not sdists:
            raise ConversionError("pip did not return the llama-cpp-python source archive")
        staging = Path(tempfile.mkdtemp(prefix=".src.", dir=_mkdir(dest_dir)))
        with tarfile.open(sdists[0]) as tar:
            for member in tar.getmembers():
                _, _, rel = member.name.partition("/vendor/llama.cpp/")
                if not rel or not any(rel == m or (m.endswith("/") and rel.startswith(m))
                                      for m in _CONVERTER_MEMBERS):
                    continue
                if not (member.isfile() or member.isdir()):
                    continue
                member.name = rel
                tar.extract(member, staging, filter="data")
    src = dest_dir / "src"
    if src.exists():
        shutil.rmtree(src)
    os.replace(staging, src)
    return src / "convert_hf_to_gguf.py"


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------- HF -> GGUF


def hf_fingerprint(folder: Path) -> str:
    """SHA-256 over the weights and config of a Hugging Face folder (names and contents)."""
    h = hashlib.sha256()
    for p in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.json")):
        if p.name == "model.json":
            continue
        h.update(p.name.encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise ConversionError(f"{what} failed (exit {result.returncode}):\n{tail}")


def hf_to_gguf(hf_folder: Path, out: Path, *, outtype: str = "f16", converter: Path | None = None,
               quantize: Path | None = None, echo: Echo = echo_stderr) -> Path:
    """Write ``hf_folder`` as a GGUF file ``out`` of type ``outtype``.

    f32/f16/bf16/q8_0 come straight from llama.cpp's converter; K-quants and
    the other small types are made from an f16 file with ``llama-quantize``.
    """
    outtype = outtype.lower()
    if outtype not in OUTTYPES:
        raise UserError(f"unknown GGUF type '{outtype}'", hint=f"one of: {', '.join(OUTTYPES)}")
    hf_folder, out = Path(hf_folder), Path(out)
    if not (hf_folder / "config.json").is_file():
        raise UserError(f"{hf_folder} is not a Hugging Face folder (no config.json)")
    import importlib.util

    for module in ("numpy", "sentencepiece", "transformers", "torch"):  # the converter runs in a subprocess
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(module, "convert", "Exporting a model to GGUF")
    converter = converter or llama_tools.find_converter() or fetch_converter(echo=echo)
    quantize_exe = None
    if outtype in QUANTIZE_TYPES:
        quantize_exe = quantize or llama_tools.find_quantize()
        if quantize_exe is None:
            raise ConversionError(
                f"GGUF type {outtype} needs llama.cpp's llama-quantize, which is not built",
                hint="build it with scripts/build_llama_cpp.sh, or use --outtype q8_0 or f16")

    first_type = "f16" if quantize_exe else outtype
    env = dict(os.environ)
    env.pop("NO_LOCAL_GGUF", None)  # use the gguf-py vendored with the converter, which matches it
    with atomic_path(out) as target:
        tmp = target.with_name(f"{target.name}.{first_type}") if quantize_exe else target
        try:
            _run([sys.executable, str(converter), str(hf_folder), "--outfile", str(tmp), "--outtype", first_type],
                 "llama.cpp's convert_hf_to_gguf.py", env=env)
            if quantize_exe:
                _run([str(quantize_exe), str(tmp), str(target), outtype.upper()], "llama-quantize")
        finally:
            if tmp != target:
                tmp.unlink(missing_ok=True)
    return out


def gguf_from_hf(src: ResolvedModel, *, outtype: str = "f16", output: Path | None = None,
                 force: bool = False, echo: Echo = echo_stderr) -> ResolvedModel:
    """A GGUF file for the resolved Hugging Face model ``src`` (a trained run, a converted or downloaded folder).

    The default type is f16, because the small default student answers
    correctly in llama.cpp as f16 but not quantized.

    Default output: ``<folder>/gguf/<name>-<outtype>.gguf``, with a
    ``gguf/model.json`` manifest recording the fingerprint of the folder it came
    from; an up-to-date export is reused.
    """
    folder = src.path
    outtype = outtype.lower()
    out = Path(output) if output else folder / "gguf" / f"{src.name}-{outtype}.gguf"
    fingerprint = hf_fingerprint(folder)
    manifest_dir = out.parent
    manifest = read_manifest(manifest_dir) or {}
    exports = manifest.get("exports", {}) if manifest.get("source_fingerprint") == fingerprint else {}
    if not force and out.is_file() and exports.get(out.name, {}).get("size") == out.stat().st_size:
        return ResolvedModel(src.name, out, "gguf", chat_template_of(out, "gguf"), src.entry)

    echo(f"Exporting {folder} to GGUF ({outtype}) ...")
    start = time.monotonic()
    hf_to_gguf(folder, out, outtype=outtype, echo=echo)
    exports[out.name] = {"outtype": outtype, "size": out.stat().st_size, "date": now(),
                         "seconds": round(time.monotonic() - start, 1)}
    write_manifest(manifest_dir, {
        "name": src.name,
        "format": "gguf",
        "file": out.name,
        "source": f"exported from {folder}",
        "source_fingerprint": fingerprint,
        "sha256": None,
        "size": out.stat().st_size,
        "date": now(),
        "role": src.entry.role if src.entry else "",
        "exports": exports,
    })
    return ResolvedModel(src.name, out, "gguf", chat_template_of(out, "gguf"), src.entry)


def describe_gguf(path: Path) -> dict[str, Any]:
    """Architecture, tokenizer type and file type of a GGUF file (for checks and the CLI)."""
    from unfork.models.gguf_meta import read_metadata

    meta = read_metadata(path)
    return {k: meta.get(k) for k in ("general.architecture", "general.file_type", "tokenizer.ggml.model",
                                     "tokenizer.ggml.pre")} | {"has_chat_template":
                                                               bool(meta.get("tokenizer.chat_template"))}

