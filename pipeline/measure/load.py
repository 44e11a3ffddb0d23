"""Load sweep: the recipe's workload sent to the served variant at each load level, by GuideLLM.

GuideLLM runs in its own environment (a worker) and hands back every request's timings; the
statistics (`latency.py`), the SLO verdict and the cost (`capacity.py`) are ours, computed from those
records, so a changed SLO or price re-decides without measuring again. A sweep in which requests
failed is reported but not cached: the errors may be passing trouble.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.artifacts import RESULT_FILE, Store, content_key, sha256_file, write_json
from pipeline.engines import EngineContext
from pipeline.recipe.schema import EngineConfig
from pipeline.recipe.traffic import LoadConfig, TokenLengths
from pipeline.toolenv import ToolEnv
from pipeline.workers.handoff import from_plain, to_plain
from pipeline.workers.messages import LoadOutput, LoadRequest, TokenLengthSpec

STAGE = "load"
# One worker process (one per stream buys nothing on a small machine); its logs at warnings only.
GUIDELLM_ENV = {"GUIDELLM__MAX_WORKER_PROCESSES": "1", "GUIDELLM__LOGGING__CONSOLE_LOG_LEVEL": "WARNING",
                "TRANSFORMERS_VERBOSITY": "error"}
ENV = "guidellm"
WORKER = "pipeline.workers.load_guidellm"


def key(config: LoadConfig, engine_config: EngineConfig, artifact_key: str, build: str | None,
        generator: str | None) -> str:
    # Everything that changes serving or the requests sent belongs here (an in-process scorer's
    # settings do not; the SLO and the price are applied to the records afterwards). The tokenizer
    # that sizes the prompts is the source model's, which the artifact key already holds.
    prompts = config.prompts_file
    return content_key(STAGE, artifact_key, build, engine_config.keyed_settings(engine_config.not_serving),
                       config.model_dump(mode="json", exclude={"prompts_file"}),
                       sha256_file(prompts) if prompts and prompts.is_file() else None, generator)


def cached(store: Store, load_key: str) -> LoadOutput | None:
    return from_plain(store.result(STAGE, load_key), LoadOutput) if store.has(STAGE, load_key) else None


def _lengths(lengths: TokenLengths) -> TokenLengthSpec:
    return TokenLengthSpec(mean=lengths.mean, stdev=lengths.stdev, min=lengths.min, max=lengths.max)


def request(config: LoadConfig, base_url: str, api_key: str, served_model: str,
            tokenizer: Path, out: Path) -> LoadRequest:
    return LoadRequest(
        base_url=base_url, api_key=api_key, served_model=served_model, tokenizer=str(tokenizer.resolve()), out=str(out),
        api=config.api, prompt_tokens=_lengths(config.prompt_tokens), output_tokens=_lengths(config.output_tokens),
        prompts_file=str(config.prompts_file) if config.prompts_file else None, shared_prefix_tokens=config.shared_prefix_tokens,
        seed=config.seed, profile=config.profile, levels=list(config.levels), repeats=config.repeats, arrivals=config.arrivals,
        requests_per_level=config.requests_per_level, max_seconds_per_level=config.max_seconds_per_level,
        warmup_requests=config.warmup_requests, request_timeout_s=config.request_timeout_s)


def generate(env: ToolEnv, job: LoadRequest, workdir: Path, timeout_s: float) -> LoadOutput:
    """Run the sweep `job` with GuideLLM in its environment; its log and report land in `workdir`."""
    return env.run_worker(WORKER, job, workdir, "load.log", extra_env=GUIDELLM_ENV, timeout_s=timeout_s)


def failed_requests(output: LoadOutput) -> int:
    return sum(not r.ok for level in output.levels for r in level.requests)


def run(engine: EngineContext, env: ToolEnv, store: Store, config: LoadConfig, tokenizer: Path,
        load_key: str) -> LoadOutput:
    """The sweep against the running server; cached unless a request failed."""
    with store.lock(STAGE, load_key):  # another run measuring the same may have finished meanwhile
        if (found := cached(store, load_key)) is not None:
            return found
        return _build(engine.running(), env, store, config, tokenizer, load_key)


def _build(server: Any, env: ToolEnv, store: Store, config: LoadConfig, tokenizer: Path, load_key: str) -> LoadOutput:
    with store.building(STAGE, load_key) as scratch:
        job = request(config, server.base_url, server.api_key, server.served_model, tokenizer, scratch)
        # The sweep's own time bound: every level at its limit, its warm-up and GuideLLM's start.
        limit = config.repeats * len(config.levels) * (config.max_seconds_per_level + 2 * config.request_timeout_s) + 300
        output = generate(env, job, scratch, limit)
        write_json(scratch / RESULT_FILE, to_plain(output))
        if failed_requests(output):
            raise NotCached(output)
    return output


class NotCached(Exception):
    """Raised inside the store's build to drop the entry; carries the result, which is still used."""

    def __init__(self, output: LoadOutput):
        super().__init__("requests failed: not cached")
        self.output = output
