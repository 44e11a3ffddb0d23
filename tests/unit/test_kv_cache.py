"""A variant's KV cache type reaches everything that runs it: llama-server's flags, the in-process
scorer's cache (as llama-cpp-python takes it), and the engine section `quantgate serve` rebuilds."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import specs
from pipeline.engines.llamacpp import LlamaCppEngineConfig, LlamaServerEngine
from pipeline.engines.vllm import VLLMEngineConfig
from pipeline.quantize import Artifact
from pipeline.toolenv import ToolEnv
from pipeline.workers.llamacpp_scorer import GGML_CACHE_TYPES, cache_options

GGML_H = sorted(Path(__file__).resolve().parents[2].glob(
    ".venvs/llamacpp/src/llama_cpp_python-*/vendor/llama.cpp/ggml/include/ggml.h"))


def server_argv(tmp_path: Path, config: LlamaCppEngineConfig) -> list[str]:
    binary = tmp_path / "env" / "build" / "bin" / "llama-server"
    binary.parent.mkdir(parents=True, exist_ok=True)
    binary.touch()
    artifact = Artifact("v", "k", tmp_path, tmp_path / "model.gguf", {}, cached=True)
    engine = LlamaServerEngine(artifact, config, ToolEnv("llamacpp", tmp_path / "env"), tmp_path / "server.log")
    return engine.server.argv(8080)


def test_a_quantized_cache_adds_its_flags_and_flash_attention_and_the_default_adds_none(tmp_path):
    default = server_argv(tmp_path, LlamaCppEngineConfig())
    assert not {"--cache-type-k", "--cache-type-v", "--flash-attn"} & set(default)
    argv = server_argv(tmp_path, LlamaCppEngineConfig().with_kv_cache("q4_0"))
    assert argv[len(default):] == ["--cache-type-k", "q4_0", "--cache-type-v", "q4_0", "--flash-attn", "on"]
    assert argv[:len(default)] == default


def test_the_scorer_runs_the_cache_the_server_runs():
    config = LlamaCppEngineConfig(cache_type_k="q8_0", cache_type_v="q4_0")
    scorer = specs.engine("llamacpp").capabilities(config).scorer
    assert scorer.cache_types() == ["q8_0", "q4_0"]
    assert cache_options(scorer.cache_types()) == {"type_k": 8, "type_v": 2, "flash_attn": True}
    assert specs.engine("llamacpp").capabilities(LlamaCppEngineConfig()).scorer.cache_types() is None
    assert cache_options(None) == {}  # llama-cpp-python's own defaults, as before the setting existed


def test_every_cache_type_the_server_takes_has_its_ggml_number():
    assert set(GGML_CACHE_TYPES) == set(LlamaCppEngineConfig().kv_cache_types())


@pytest.mark.skipif(not GGML_H, reason="no llama.cpp sources (make setup)")
def test_the_ggml_numbers_are_those_of_the_vendored_header():
    header = GGML_H[0].read_text()
    for name, number in GGML_CACHE_TYPES.items():
        assert f"GGML_TYPE_{name.upper()} " in header and f"= {number}," in header.split(f"GGML_TYPE_{name.upper()} ")[1][:12]


def test_vllm_takes_the_cache_type_as_its_kv_cache_dtype():
    assert VLLMEngineConfig().with_kv_cache("fp8").kv_cache_dtype == "fp8"
    assert VLLMEngineConfig().with_kv_cache(None) == VLLMEngineConfig()
