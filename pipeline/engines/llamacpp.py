"""llama.cpp's own `llama-server`: it batches concurrent requests (parallel slots), unlike the
llama-cpp-python server, which serializes them behind a global lock.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.engines import register
from pipeline.engines.server import ServedEngine, ServerProcess
from pipeline.quantize import Artifact
from pipeline.recipe import LlamaCppEngineConfig
from pipeline.toolenv import ToolEnv, llamacpp_binary, llamacpp_env


class LlamaServerEngine(ServedEngine):
    name = "llamacpp"
    eval_worker = "pipeline.workers.lmeval_llamacpp"
    divergence_worker = "pipeline.workers.divergence_llamacpp"

    def __init__(self, artifact: Artifact, config: LlamaCppEngineConfig, env: ToolEnv, log_path: Path):
        super().__init__(artifact, env)
        self.config = config
        # The scorer runs while the server idles, so it may use every core.
        self.scorer_threads = config.scorer_threads or os.cpu_count() or 1
        argv = [
            str(llamacpp_binary(env, "llama-server")),
            "--model", str(artifact.model_path),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--api-key", self.api_key,
            "--alias", self.served_model,
            "--threads", str(config.threads),
            "--threads-batch", str(config.threads),
            "--parallel", str(config.parallel),
            "--ctx-size", str(config.parallel * config.ctx_per_slot),
            "--no-webui",
        ]
        # /health answers 503 while the model loads and 200 once it can serve.
        self.server = ServerProcess(argv, f"{self.base_url}/health", log_path, config.ready_timeout_s)

    def prompt_logprobs(self, token_ids: list[int], workdir: Path) -> list[float]:
        """log P(t_i | t_<i) for i ≥ 1, from the in-process scorer (the server cannot give them)."""
        return self.env.run_worker("pipeline.workers.parity_llamacpp", {
            "model_path": str(self.artifact.model_path), "token_ids": token_ids, "threads": self.scorer_threads,
        }, workdir, "parity.log")["token_logprobs"]


register("llamacpp", lambda artifact, engines, envs_root, artifacts_root, log_path:
         LlamaServerEngine(artifact, engines.llamacpp, llamacpp_env(envs_root), log_path))
