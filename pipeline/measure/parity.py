"""Engine parity: each engine's unquantized reference against the model under transformers.

Compared by prompt logprobs on the same token ids (never by generated text: near-ties make greedy
text differ between correct engines). A reference off by more than the tolerance fails every
variant on its engine, since its deltas would measure the engine, not the quantization.
"""

from __future__ import annotations

from typing import Any

from pipeline.artifacts import RESULT_FILE, Store, content_key, sha256_file, write_json
from pipeline.measure.divergence import text_path
from pipeline.recipe import ParityConfig
from pipeline.source import SourceResult
from pipeline.toolenv import ToolEnv

STAGE = "parity"


def transformers_logprobs(config: ParityConfig, source: SourceResult, store: Store, env: ToolEnv) -> dict[str, Any]:
    """Token ids of the parity text and their logprobs under transformers (float32), cached."""
    key = content_key("parity-hf", source.key, sha256_file(text_path(config)), config.tokens)
    if not store.has(STAGE, key):
        with store.building(STAGE, key) as scratch:
            result = env.run_worker("pipeline.workers.hf_logprobs", {
                "model_dir": str(source.model_dir), "text_path": str(text_path(config)), "tokens": config.tokens,
            }, scratch, "hf_logprobs.log")
            write_json(scratch / RESULT_FILE, result)
    return store.result(STAGE, key)


def compare(engine_logprobs: list[float], hf_logprobs: list[float]) -> dict[str, Any]:
    if not engine_logprobs or len(engine_logprobs) != len(hf_logprobs):
        return {"n": len(engine_logprobs), "mean_abs_diff": None, "max_abs_diff": None}
    diffs = [abs(a - b) for a, b in zip(engine_logprobs, hf_logprobs)]
    return {"n": len(diffs), "mean_abs_diff": round(sum(diffs) / len(diffs), 5), "max_abs_diff": round(max(diffs), 5)}
