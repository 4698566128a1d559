"""What this machine can do: Python, CPU features, memory, GPUs, optional backends.

Only cheap probes: nothing here imports torch unless it is installed and the
caller asks for GPU details.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

# module to probe -> (distribution name, what it enables)
BACKENDS = {
    "torch": ("torch", "training and the transformers backend"),
    "transformers": ("transformers", "HF models: serving on CPU/GPU, training"),
    "peft": ("peft", "LoRA adapters"),
    "llama_cpp": ("llama-cpp-python", "llama.cpp Python bindings"),
    "vllm": ("vllm", "GPU serving with vLLM"),
    "gguf": ("gguf", "GGUF reading and conversion"),
    "lm_eval": ("lm-eval", "lm-evaluation-harness benchmarks"),
    "httpx": ("httpx", "the OpenAI-compatible client"),
}
CPU_FLAGS = ("avx", "avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma", "f16c", "neon", "sve")


def cpu_info() -> dict:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "cores": os.cpu_count(), "features": [f for f in CPU_FLAGS if f in flags]}


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def gpus() -> list[str]:
    """GPUs from nvidia-smi, without importing torch."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def backends() -> dict[str, str | None]:
    """Installed version of each optional backend, or None; found without importing them."""
    found = {}
    for module, (dist, _) in BACKENDS.items():
        if importlib.util.find_spec(module) is None:
            found[module] = None
            continue
        try:
            found[module] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[module] = "installed"
    return found


def llama_server_path() -> str | None:
    try:
        from unfork.serve.llama_cpp import find_llama_server
    except ImportError:
        return shutil.which("llama-server")
    try:
        return str(find_llama_server())
    except Exception:
        return None


def system_info() -> dict:
    from unfork import __version__
    from unfork.paths import get_paths

    paths = get_paths()
    return {
        "unfork": __version__,
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpu": cpu_info(),
        "memory_gib": memory_gib(),
        "gpus": gpus(),
        "backends": backends(),
        "llama_server": llama_server_path(),
        "paths": {"config": str(paths.config_file), "data": str(paths.data_dir), "models": str(paths.models_dir)},
    }
