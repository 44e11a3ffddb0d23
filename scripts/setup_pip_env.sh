#!/usr/bin/env bash
# Creates a tool environment from its pinned requirement file: setup_pip_env.sh NAME ENV_DIR MODULE
# installs requirements/NAME.txt into ENV_DIR and checks that MODULE imports.
set -euo pipefail
name=$1
env_dir=$2
module=$3
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
[ -x "$env_dir/bin/python" ] || "$python" -m venv "$env_dir"
echo "[$name] installing requirements/$name.txt"
"$env_dir/bin/python" -m pip --disable-pip-version-check -q install -r "$here/requirements/$name.txt"
"$env_dir/bin/python" -c "import importlib.metadata, $module; print('[$name] ready: $module', importlib.metadata.version('$module'))"
