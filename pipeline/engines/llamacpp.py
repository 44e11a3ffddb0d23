"""llama.cpp's own `llama-server`: it batches concurrent requests (parallel slots), unlike the
llama-cpp-python server, which serializes them behind a global lock.

It cannot return correct prompt logprobs (`echo` is ignored), so it declares an in-process scorer
instead: the same GGUF file and ggml kernels through llama-cpp-python, with full-vocabulary logits.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from pipeline import compat, specs
from pipeline.engines.server import ServedEngine, ServerProcess
from pipeline.quantize import Artifact
from pipeline.recipe.schema import EngineConfig
from pipeline.toolenv import ToolEnv, ToolEnvMissing, llamacpp_binary, llamacpp_version


# what llama-server's --cache-type-k/-v accept (llama-server --help of the vendored build)
CacheType = Literal["f16", "bf16", "f32", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl"]


class LlamaCppEngineConfig(EngineConfig):
    """llama-server settings. One thread per server avoids thrashing on a 2-core machine."""

    # ggml splits a matrix by rows across threads, each dot product on one thread: thread counts
    # change speed, never a logit
    speed_only: ClassVar[frozenset[str]] = frozenset({"threads", "scorer_threads", "ready_timeout_s"})
    not_serving: ClassVar[frozenset[str]] = frozenset({"scorer_threads", "ready_timeout_s"})
    context_field: ClassVar[str] = "ctx_per_slot"
    kv_cache_fields: ClassVar[tuple[str, ...]] = ("cache_type_k", "cache_type_v")
    keyed_when_set: ClassVar[frozenset[str]] = frozenset(kv_cache_fields)

    threads: int = Field(1, ge=1)
    parallel: int = Field(4, ge=1, description="concurrent slots (continuous batching)")
    scorer_threads: int | None = Field(
        None, ge=1, description="threads of the in-process scorer (evals, divergence); None: all cores"
    )
    ctx_per_slot: int = Field(1024, ge=128)
    cache_type_k: CacheType = Field("f16", description="--cache-type-k: the type keys are cached in")
    cache_type_v: CacheType = Field("f16", description="--cache-type-v: the type values are cached in"
                                                       " (a quantized one needs flash attention, turned on with it)")
    ready_timeout_s: float = Field(120, gt=0)

    def cache_types(self) -> tuple[str, str] | None:
        """(K, V) cache types when either is not llama.cpp's default f16, else None."""
        return None if (self.cache_type_k, self.cache_type_v) == ("f16", "f16") else (self.cache_type_k,
                                                                                        self.cache_type_v)


class LlamaServerEngine(ServedEngine):
    name = "llamacpp"

    def __init__(self, artifact: Artifact, config: LlamaCppEngineConfig, env: ToolEnv, log_path: Path):
        super().__init__(artifact, log_path)
        binary = llamacpp_binary(env, "llama-server")
        cache = config.cache_types()
        # flash attention on, as the scorer has it (a quantized V cache needs it); f16 caches keep the default
        cache_flags = ["--cache-type-k", cache[0], "--cache-type-v", cache[1], "--flash-attn", "on"] if cache else []

        def argv(port: int) -> list[str]:
            return [str(binary), "--model", str(artifact.model_path), "--host", "127.0.0.1", "--port", str(port),
                    "--alias", self.served_model, "--threads", str(config.threads),
                    "--threads-batch", str(config.threads), "--parallel", str(config.parallel),
                    "--ctx-size", str(config.parallel * config.ctx_per_slot), "--no-webui", *cache_flags]

        # The key goes in the environment, not in argv, which every local user can read.
        environ = env.environ({"LLAMA_API_KEY": self.api_key}, keep_secrets=frozenset())
        # /health answers 503 while the model loads and 200 once it can serve.
        self.server = ServerProcess(argv, "/health", log_path, config.ready_timeout_s, env=environ)


def capabilities(config: LlamaCppEngineConfig) -> specs.Capabilities:
    # The scorer runs while the server idles, so it may use every core.
    scorer = specs.InProcessScorer(worker="pipeline.workers.llamacpp_scorer",
                                   threads=config.scorer_threads or os.cpu_count() or 1,
                                   kv_cache=config.cache_types())
    return specs.Capabilities(max_context=config.ctx_per_slot, concurrency=config.parallel,
                              served_prompt_logprobs=False, scorer=scorer)


def build(env: ToolEnv) -> str | None:
    try:
        return f"llama-cpp-python=={llamacpp_version(env)} on {compat.cpu_class()}"
    except ToolEnvMissing:
        return None


SPEC = specs.register_engine(specs.EngineSpec(
    name="llamacpp", formats=frozenset({"gguf"}), env="llamacpp", config_model=LlamaCppEngineConfig,
    capabilities=capabilities, build=build,
    make=lambda *, artifact, config, env, artifacts_root, log_path: LlamaServerEngine(artifact, config, env, log_path),
))
