"""Engine parity: each engine's unquantized reference against the model under transformers.

Compared by prompt logprobs on the same token ids (never by generated text: near-ties make greedy
text differ between correct engines). A reference off by more than the tolerance fails every
variant on its engine, since its deltas would measure the engine, not the quantization.
The engine's logprobs come from its server when it scores prompts (`served_prompt_logprobs`), else
from its in-process scorer on the same file and kernels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.artifacts import RESULT_FILE, Store, content_key, sha256_file, write_json
from pipeline.engines import EngineContext
from pipeline.measure import NotMeasurable
from pipeline.measure.served import ServedLogprobs
from pipeline.measure.texts import text_path
from pipeline.quantize import Artifact
from pipeline.recipe.schema import ParityConfig
from pipeline.source import SourceResult
from pipeline.specs import Capabilities
from pipeline.toolenv import ToolEnv
from pipeline.workers.handoff import from_plain, to_plain
from pipeline.workers.messages import ScorerLogprobsRequest, TokenLogprobs, TransformersLogprobsRequest

STAGE = "parity"


@dataclass(frozen=True, kw_only=True)
class ParityResult:
    n: int
    mean_abs_diff: float | None
    max_abs_diff: float | None
    engine: str
    limit: float


def method(capabilities: Capabilities) -> str:
    if capabilities.served_prompt_logprobs:
        return "served"
    if capabilities.scorer is not None:
        return "in-process scorer"
    raise NotMeasurable("the engine neither scores prompts nor has an in-process scorer: no parity check")


def key(config: ParityConfig, artifact_key: str, engine: dict[str, Any], reference_versions: dict[str, Any]) -> str:
    return content_key(STAGE, artifact_key, engine, config.model_dump(), reference_versions)


def cached(store: Store, parity_key: str) -> ParityResult | None:
    return from_plain(store.result(STAGE, parity_key), ParityResult) if store.has(STAGE, parity_key) else None


def transformers_logprobs(config: ParityConfig, source: SourceResult, store: Store, env: ToolEnv,
                          timeout_s: float) -> TokenLogprobs:
    """Token ids of the parity text and their logprobs under transformers (float32), cached."""
    hf_key = content_key("parity-hf", source.key, sha256_file(text_path(config)), config.tokens,
                         {"transformers": env.version("transformers"), "torch": env.version("torch")})
    if not store.has(STAGE, hf_key):
        with store.building(STAGE, hf_key) as scratch:
            result = env.run_worker("pipeline.workers.hf_logprobs", TransformersLogprobsRequest(
                model_dir=str(source.model_dir), text_path=str(text_path(config)), tokens=config.tokens,
            ), scratch, "hf_logprobs.log", timeout_s=timeout_s)
            write_json(scratch / RESULT_FILE, to_plain(result))
    return from_plain(store.result(STAGE, hf_key), TokenLogprobs)


def compare(engine_logprobs: list[float], hf_logprobs: list[float]) -> dict[str, float | int | None]:
    if not engine_logprobs or len(engine_logprobs) != len(hf_logprobs):
        return {"n": len(engine_logprobs), "mean_abs_diff": None, "max_abs_diff": None}
    diffs = [abs(a - b) for a, b in zip(engine_logprobs, hf_logprobs)]
    return {"n": len(diffs), "mean_abs_diff": round(sum(diffs) / len(diffs), 5), "max_abs_diff": round(max(diffs), 5)}


def run(engine: EngineContext, artifact: Artifact, store: Store, config: ParityConfig, source: SourceResult,
        transformers_env: ToolEnv, parity_key: str, timeout_s: float) -> ParityResult:
    """The reference served by `engine` vs transformers; stored under `parity_key`."""
    how = method(engine.capabilities)
    hf = transformers_logprobs(config, source, store, transformers_env, timeout_s)
    with store.building(STAGE, parity_key) as scratch:
        if how == "served":
            ours = ServedLogprobs(engine.running(), engine.capabilities.top_logprobs).prompt_logprobs(hf.token_ids)
        else:
            assert engine.capabilities.scorer is not None
            ours = engine.env.run_worker(engine.capabilities.scorer.worker, ScorerLogprobsRequest(
                model_path=str(artifact.model_path), token_ids=hf.token_ids,
                threads=engine.capabilities.scorer.threads, kv_cache=engine.capabilities.scorer.cache_types()),
                scratch, "parity.log", timeout_s=timeout_s).token_logprobs
        result = ParityResult(**compare(ours, hf.token_logprobs), engine=engine.name, limit=config.max_mean_abs_diff)
        write_json(scratch / RESULT_FILE, to_plain(result))
    return result
