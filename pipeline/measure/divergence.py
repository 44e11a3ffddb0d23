"""Divergence of a variant vs its engine's reference on a fixed text: KL, top-1 flips, perplexity.

The method follows the engine's capabilities:
- exact (an in-process scorer with full-vocabulary logits, llama.cpp): a worker loads both models and
  compares the whole distributions at every position; no server needed.
- served top-k (the server returns top-k prompt logprobs, vLLM): the reference's are collected once
  while it is served and kept; each variant's are compared with them. KL is then taken over the
  reference's top-k tokens plus one bucket for the rest of the vocabulary, a token missing from the
  variant's top-k counted at the variant's k-th logprob (the most it can have). Flips and the
  perplexity ratio stay exact (top-1 and the text's own tokens are always returned). Measured
  against exact KL on the demo's GGUF ladder at k=100: within -13% .. +7% (README "Divergence").

Cached on (variant, reference, text bytes, windowing, method). The reference is also measured
against itself: it must come out at exactly 0, or the measurement adds noise of its own.
"""

from __future__ import annotations

import math
import time
from typing import Any, Protocol

import numpy as np

from pipeline.artifacts import RESULT_FILE, Store, content_key, sha256_file, write_json
from pipeline.engines import EngineContext
from pipeline.measure import NotMeasurable
from pipeline.measure.served import ServedLogprobs
from pipeline.measure.texts import text_path
from pipeline.quantize import Artifact
from pipeline.recipe.schema import DivergenceConfig
from pipeline.specs import Capabilities
from pipeline.workers.divergence_summary import summarize
from pipeline.workers.handoff import from_plain, to_plain
from pipeline.workers.messages import DivergenceMetrics, DivergenceRequest

STAGE = "divergence"
EXACT_METHOD = "1"
NOT_MEASURABLE = "it gives neither full-vocabulary logits nor top-k prompt logprobs: no divergence measurement"  # the method's version in the key: bump when exact divergence changes


def served_method(k: int) -> str:
    return f"served-top{k}-v1"


def method(capabilities: Capabilities) -> str:
    """The method's name (part of the key): exact where full logits exist, else served top-k."""
    if capabilities.exact_logits():
        return EXACT_METHOD
    if capabilities.top_logprobs > 0:
        return served_method(capabilities.top_logprobs)
    raise NotMeasurable(NOT_MEASURABLE)


def needs_server(capabilities: Capabilities) -> bool:
    return method(capabilities) != EXACT_METHOD


def key(config: DivergenceConfig, variant_key: str, reference_key: str, method: str, engine: dict[str, Any]) -> str:
    return content_key(STAGE, variant_key, reference_key, engine, sha256_file(text_path(config)),
                       config.windows, config.window_tokens, method)


def cached(store: Store, div_key: str) -> DivergenceMetrics | None:
    return from_plain(store.result(STAGE, div_key), DivergenceMetrics) if store.has(STAGE, div_key) else None


def run(engine: EngineContext, artifact: Artifact, reference: Artifact, store: Store, config: DivergenceConfig,
        identity: dict[str, Any], timeout_s: float) -> DivergenceMetrics:
    """`artifact` vs `reference` (itself, for the reference), by the method the engine allows;
    `identity` is the engine's part of the key (pipeline/measure/keys.py)."""
    how = method(engine.capabilities)
    if how != EXACT_METHOD:
        served = ServedLogprobs(engine.running(), engine.capabilities.top_logprobs)
        return run_served(config, served, artifact.key, reference.key, store, identity)
    assert engine.capabilities.scorer is not None
    with store.building(STAGE, key(config, artifact.key, reference.key, how, identity)) as scratch:
        metrics = engine.env.run_worker(engine.capabilities.scorer.worker, DivergenceRequest(
            reference_path=str(reference.model_path), variant_path=str(artifact.model_path),
            text_path=str(text_path(config)), windows=config.windows, window_tokens=config.window_tokens,
            threads=engine.capabilities.scorer.threads, kv_cache=engine.capabilities.scorer.cache_types()),
            scratch, "divergence.log", timeout_s=timeout_s)
        write_json(scratch / RESULT_FILE, to_plain(metrics))
    return metrics


# --- served engines: top-k prompt logprobs ------------------------------------------------

# One position of a window: (log P(actual token), {token id: logprob} of the top-k and the actual token).
Position = tuple[float, dict[int, float]]


class ServesTopLogprobs(Protocol):
    max_top_logprobs: int

    def tokenize(self, text: str) -> list[int]: ...

    def prompt_top_logprobs(self, token_ids: list[int], k: int) -> list[Position]: ...


def _windows(config: DivergenceConfig, engine: ServesTopLogprobs) -> list[list[int]]:
    tokens = engine.tokenize(text_path(config).read_text())
    size = config.window_tokens
    windows = [tokens[i:i + size] for i in range(0, len(tokens) - size + 1, size)][: config.windows]
    if not windows:
        raise NotMeasurable(f"divergence text has {len(tokens)} tokens, fewer than one window of {size}")
    return windows


def _collect(config: DivergenceConfig, engine: ServesTopLogprobs) -> dict:
    windows = _windows(config, engine)
    k = engine.max_top_logprobs
    return {"k": k, "token_ids": windows,
            "positions": [[[lp, [[t, v] for t, v in top.items()]] for lp, top in engine.prompt_top_logprobs(w, k)]
                          for w in windows]}


def _positions(collected: dict) -> list[list[Position]]:
    return [[(lp, {int(t): v for t, v in top}) for lp, top in window] for window in collected["positions"]]


def reference_key(config: DivergenceConfig, reference_key_: str, k: int, engine: dict[str, Any]) -> str:
    return content_key(STAGE, "reference-top-logprobs", reference_key_, engine, sha256_file(text_path(config)),
                       config.windows, config.window_tokens, served_method(k))


def run_served(config: DivergenceConfig, engine: ServesTopLogprobs, variant_key: str, reference_key_: str,
               store: Store, identity: dict[str, Any]) -> DivergenceMetrics:
    """Divergence of the variant being served by `engine`; when it is the reference, first keep its
    top-k logprobs for the variants after it (and then compare it with itself: a second pass)."""
    k = engine.max_top_logprobs
    div_key = key(config, variant_key, reference_key_, served_method(k), identity)
    if (found := cached(store, div_key)) is not None:
        return found
    ref_key = reference_key(config, reference_key_, k, identity)
    if variant_key == reference_key_ and not store.has(STAGE, ref_key):
        with store.building(STAGE, ref_key) as scratch:
            write_json(scratch / RESULT_FILE, _collect(config, engine))
    if not store.has(STAGE, ref_key):
        raise NotMeasurable("the reference's top-k logprobs were never collected (did its server run?)")
    started = time.monotonic()
    reference = store.result(STAGE, ref_key)
    if _windows(config, engine) != reference["token_ids"]:
        raise NotMeasurable("reference and variant tokenize the divergence text differently: not comparable")
    variant = [engine.prompt_top_logprobs(w, k) for w in reference["token_ids"]]
    metrics = DivergenceMetrics(**topk_metrics(_positions(reference), variant, k), window_tokens=config.window_tokens,
                                seconds=round(time.monotonic() - started, 2))
    with store.building(STAGE, div_key) as scratch:
        write_json(scratch / RESULT_FILE, to_plain(metrics))
    return metrics


def topk_metrics(reference: list[list[Position]], variant: list[list[Position]], k: int) -> dict:
    """KL(reference || variant) over the reference's top-k plus a rest bucket, flips and perplexity."""
    klds, agree, nll_ref, nll_var, tail = [], 0, 0.0, 0.0, []
    for ref_window, var_window in zip(reference, variant, strict=True):
        for (ref_lp, ref_top), (var_lp, var_top) in zip(ref_window, var_window, strict=True):
            # the variant's k-th largest logprob bounds every token it did not return
            ceiling = sorted(var_top.values(), reverse=True)[min(k, len(var_top)) - 1]
            p = np.exp(np.fromiter(ref_top.values(), float))
            q = np.exp(np.fromiter((var_top.get(t, ceiling) for t in ref_top), float))
            p_rest, q_rest = max(0.0, 1.0 - p.sum()), max(1e-12, 1.0 - q.sum())
            kld = float((p * (np.log(p) - np.log(q))).sum())
            if p_rest > 0:
                kld += p_rest * math.log(p_rest / q_rest)
            klds.append(max(kld, 0.0))
            tail.append(p_rest)
            agree += max(ref_top, key=ref_top.__getitem__) == max(var_top, key=var_top.__getitem__)
            nll_ref -= ref_lp
            nll_var -= var_lp
    return {
        **summarize(klds, agree, nll_ref, nll_var),
        "windows": len(reference),
        "top_k": k,
        "reference_tail_mass": float(np.mean(tail)),
        "method": f"served top-{k} prompt logprobs: KL over the reference's top-{k} plus a rest bucket",
    }
