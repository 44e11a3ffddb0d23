#!/usr/bin/env bash
# Creates the llama.cpp tool environment in $1 (default .venvs/llamacpp): one cmake build of the
# llama.cpp vendored in the llama-cpp-python sdist gives llama-server, llama-quantize, llama-imatrix and the shared
# libraries that llama-cpp-python loads, so the C++ is compiled once, not twice (~6 min on 2 cores).
# convert_hf_to_gguf.py and its gguf-py come from the same sdist (PyPI gguf 0.19 breaks it).
set -euo pipefail
LLAMA_CPP_PYTHON_VERSION=0.3.36
env_dir=${1:-.venvs/llamacpp}
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}

mkdir -p "$env_dir"
env_dir=$(cd "$env_dir" && pwd)
[ -x "$env_dir/bin/python" ] || "$python" -m venv "$env_dir"
pip() { "$env_dir/bin/python" -m pip --disable-pip-version-check -q "$@"; }

src="$env_dir/src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION"
if [ ! -d "$src/vendor/llama.cpp" ]; then
  echo "[llamacpp] fetching llama-cpp-python $LLAMA_CPP_PYTHON_VERSION sdist"
  mkdir -p "$env_dir/src"
  pip download --no-binary :all: --no-deps "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$env_dir/src"
  tar xzf "$env_dir/src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz" -C "$env_dir/src"
  rm "$env_dir/src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
fi

build="$env_dir/build"
if [ ! -x "$build/bin/llama-server" ] || [ ! -x "$build/bin/llama-quantize" ] || [ ! -x "$build/bin/llama-imatrix" ]; then
  echo "[llamacpp] building llama.cpp (llama-server, llama-quantize, llama-imatrix, shared libraries): several minutes"
  cmake -S "$src/vendor/llama.cpp" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF >"$env_dir/cmake-configure.log"
  cmake --build "$build" -j "$(nproc)" --target llama-server llama-quantize llama-perplexity llama-imatrix \
    >"$env_dir/cmake-build.log" 2>&1 || { tail -30 "$env_dir/cmake-build.log"; exit 1; }
fi

echo "[llamacpp] installing Python packages"
pip install -r "$here/requirements/llamacpp.txt"
if ! "$env_dir/bin/python" -c "import llama_cpp" 2>/dev/null; then
  # LLAMA_BUILD=OFF: install only the Python bindings, then give them the libraries built above.
  CMAKE_ARGS="-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF" pip install --no-deps \
    "$src" "diskcache>=5.6.1" "jinja2>=2.11.3"
  site=$("$env_dir/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['platlib'])")
  mkdir -p "$site/llama_cpp/lib"
  cp -a "$build"/bin/*.so* "$site/llama_cpp/lib/"
fi
"$env_dir/bin/python" -c "import llama_cpp, lm_eval, transformers; print('[llamacpp] ready: llama_cpp', llama_cpp.__version__)"
