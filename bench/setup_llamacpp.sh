#!/usr/bin/env bash
# Benchmark-only set-up: build llama.cpp (through llama-cpp-python from PyPI) so bench/quality.py
# and bench/speed.py can compare against it.  Never run by the tests.
#
# 1. llama-cpp-python is built from its PyPI source into the project venv.  The built wheel is kept
#    in $CACHE, so a rerun installs it in seconds instead of recompiling.  Skipped with --tools-only
#    (bench/speed.py needs only the tools; bench/quality.py needs the Python package).
# 2. llama.cpp's own command-line tools are built from the same vendored source (only those cmake
#    targets) into $CACHE/tools: llama-bench and llama-batched-bench (the speed anchor as llama.cpp
#    users measure it: its C loop, no Python per token), llama-quantize (Q4_0 for bench/speed.py)
#    and llama-imatrix (llama-cpp-python's ctypes API cannot compute an importance matrix).
#
# Usage: bench/setup_llamacpp.sh [--tools-only]   (idempotent; prints where everything is)
# Env:   PYTHON (default .venv/bin/python), CACHE (default ~/.cache/pocketgpt-bench),
#        LLAMA_CPP_PYTHON_VERSION (default 0.3.36)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
CACHE="${CACHE:-$HOME/.cache/pocketgpt-bench}"
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
TOOLS_ONLY=0
case "${1:-}" in
    --tools-only) TOOLS_ONLY=1 ;;
    "") ;;
    *) echo "usage: $0 [--tools-only]" >&2; exit 2 ;;
esac
mkdir -p "$CACHE/wheels" "$CACHE/src"

# --- 1. llama-cpp-python -------------------------------------------------------------------
if [ "$TOOLS_ONLY" = 0 ] && ! "$PYTHON" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$VERSION')" 2>/dev/null; then
    WHEEL="$(ls "$CACHE"/wheels/llama_cpp_python-"$VERSION"-*.whl 2>/dev/null | head -1 || true)"
    if [ -z "$WHEEL" ]; then
        echo "building llama-cpp-python $VERSION (slow: tens of minutes on 2 cores)" >&2
        # The multimodal (llava/mtmd) library is not needed for benchmarks; skipping it saves time.
        CMAKE_ARGS="$FLAGS -DLLAVA_BUILD=OFF" nice -n 10 "$PYTHON" -m pip wheel --no-deps \
            --no-binary llama-cpp-python -w "$CACHE/wheels" "llama-cpp-python==$VERSION"
        WHEEL="$(ls "$CACHE"/wheels/llama_cpp_python-"$VERSION"-*.whl | head -1)"
    fi
    "$PYTHON" -m pip install -q "$WHEEL"
fi

# --- 2. llama.cpp's tools from the same source -------------------------------------------
TOOLS="$CACHE/tools"
NAMES="llama-quantize llama-imatrix llama-bench llama-batched-bench"
MISSING=0
for t in $NAMES; do [ -x "$TOOLS/$t" ] || MISSING=1; done
if [ "$MISSING" = 1 ]; then
    SRC="$CACHE/src/llama_cpp_python-$VERSION"
    if [ ! -d "$SRC" ]; then
        "$PYTHON" -m pip download -q --no-deps --no-binary :all: -d "$CACHE/src" \
            "llama-cpp-python==$VERSION"
        tar xzf "$CACHE/src/llama_cpp_python-$VERSION.tar.gz" -C "$CACHE/src"
    fi
    BUILD="$CACHE/build-tools"
    # shellcheck disable=SC2086
    nice -n 10 cmake -S "$SRC/vendor/llama.cpp" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_SHARED_LIBS=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF $FLAGS >/dev/null
    # shellcheck disable=SC2086
    nice -n 10 cmake --build "$BUILD" --target $NAMES -j "$CMAKE_BUILD_PARALLEL_LEVEL"
    mkdir -p "$TOOLS"
    for t in $NAMES; do cp "$BUILD/bin/$t" "$TOOLS/"; done
fi

if [ "$TOOLS_ONLY" = 0 ]; then
    echo "llama_cpp $("$PYTHON" -c 'import llama_cpp; print(llama_cpp.__version__)') in $PYTHON"
fi
echo "tools:"; for t in $NAMES; do echo "  $TOOLS/$t"; done
