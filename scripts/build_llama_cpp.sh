#!/usr/bin/env bash
# Build llama.cpp's llama-server and llama-quantize from the llama.cpp source
# vendored in the llama-cpp-python sdist (the only llama.cpp source reachable
# through a package registry). Idempotent: a second run with the same pinned
# version does nothing and prints where the binaries are.
#
#   scripts/build_llama_cpp.sh            # build into <repo>/.cache/llama.cpp
#   UNFORK_LLAMA_CPP_DIR=/opt/llama scripts/build_llama_cpp.sh
#   LLAMA_CPP_JOBS=8 scripts/build_llama_cpp.sh
#
# Python finds the result through $UNFORK_LLAMA_SERVER, then this cache
# folder, then `llama-server` on PATH.
set -euo pipefail

VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${UNFORK_LLAMA_CPP_DIR:-$REPO_ROOT/.cache/llama.cpp}"
JOBS="${LLAMA_CPP_JOBS:-$(nproc 2>/dev/null || echo 2)}"
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
    if [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then PYTHON="$REPO_ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi

# ggml's AMX kernels crash llama-server on CPUs that have AMX (Sapphire Rapids and later): a segfault in
# ggml_backend_amx_mul_mat at the first decode, for every model tried here (upstream llama.cpp#20824, closed
# unfixed). GGML_NATIVE would compile them in wherever the build machine has AMX, so they are switched off;
# the AVX-512 kernels do the work instead. "+no-amx" in the stamp rebuilds an older build once.
CC_FOR_CHECK="${CC:-cc}"
NO_AMX=""
if [[ "$(uname -m)" == "x86_64" ]] && echo | "$CC_FOR_CHECK" -mno-amx-tile -mno-amx-int8 -mno-amx-bf16 -E - >/dev/null 2>&1; then
    NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
fi
BUILD_ID="$VERSION+no-amx"

STAMP="$DEST/VERSION"
BIN="$DEST/bin"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$BUILD_ID" && -x "$BIN/llama-server" && -x "$BIN/llama-quantize" ]]; then
    echo "llama.cpp (from llama-cpp-python $VERSION) is already built:"
    echo "  llama-server:   $BIN/llama-server"
    echo "  llama-quantize: $BIN/llama-quantize"
    exit 0
fi

for tool in cmake g++ tar; do
    command -v "$tool" >/dev/null || { echo "error: '$tool' is needed to build llama.cpp" >&2; exit 1; }
done

start=$(date +%s)
mkdir -p "$DEST"
work="$DEST/work"
rm -rf "$work"
mkdir -p "$work"

echo "Downloading the llama-cpp-python $VERSION source distribution from PyPI ..."
"$PYTHON" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$work"
sdist="$(ls "$work"/llama_cpp_python-"$VERSION".tar.gz 2>/dev/null || ls "$work"/*.tar.gz)"
tar -xzf "$sdist" -C "$work"
srcdir="$(ls -d "$work"/llama_cpp_python-*/vendor/llama.cpp)"

rm -rf "$DEST/src"
mv "$srcdir" "$DEST/src"
rm -rf "$work"

echo "Building llama-server and llama-quantize with $JOBS jobs (5 to 20 minutes on 2 cores) ..."
cmake -S "$DEST/src" -B "$DEST/build" \
    -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=ON \
    -DLLAMA_BUILD_TOOLS=ON \
    -DGGML_NATIVE="${GGML_NATIVE:-ON}" \
    -DCMAKE_C_FLAGS="${CFLAGS:-} $NO_AMX" \
    -DCMAKE_CXX_FLAGS="${CXXFLAGS:-} $NO_AMX" >"$DEST/cmake-configure.log" 2>&1 \
    || { tail -n 40 "$DEST/cmake-configure.log" >&2; exit 1; }
cmake --build "$DEST/build" --config Release -j "$JOBS" --target llama-server llama-quantize \
    >"$DEST/cmake-build.log" 2>&1 \
    || { tail -n 40 "$DEST/cmake-build.log" >&2; exit 1; }

mkdir -p "$BIN"
for exe in llama-server llama-quantize; do
    found="$(find "$DEST/build" -type f -name "$exe" -perm -u+x | head -n 1)"
    [[ -n "$found" ]] || { echo "error: the build did not produce $exe" >&2; exit 1; }
    cp -f "$found" "$BIN/$exe"
done
echo "$BUILD_ID" >"$STAMP"

echo "Built in $(( $(date +%s) - start )) s:"
echo "  llama-server:   $BIN/llama-server"
echo "  llama-quantize: $BIN/llama-quantize"
