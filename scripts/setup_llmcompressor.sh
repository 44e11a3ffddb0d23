#!/usr/bin/env bash
# Creates the llm-compressor tool environment in $1 (default .venvs/llmcompressor).
set -euo pipefail
env_dir=${1:-.venvs/llmcompressor}
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
[ -x "$env_dir/bin/python" ] || "$python" -m venv "$env_dir"
"$env_dir/bin/python" -m pip --disable-pip-version-check -q install -r "$here/requirements/llmcompressor.txt"
"$env_dir/bin/python" -c "import llmcompressor; print('[llmcompressor] ready:', llmcompressor.__version__)"
