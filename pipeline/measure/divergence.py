"""Divergence of a variant vs its engine's reference on a fixed text: KL, top-1 flips, perplexity.

Two ways, by engine:
- in process (llama.cpp): a worker loads both models and compares full-vocabulary logits; exact.
- served (vLLM): the running server returns each position's top-k prompt logprobs. The reference's
  are collected once while it is served and kept; each variant's are compared with them. KL is then
  taken over the reference's top-k tokens plus one bucket for the rest of the vocabulary, a token
  missing from the variant's top-k counted at the variant's k-th logprob (the most it can have).
  Flips and the perplexity ratio stay exact (top-1 and the text's own tokens are always returned).
  Measured against exact KL on the demo's GGUF ladder at k=100: within -13% .. +7%
  (README "Divergence on served engines").

Cached on (variant, reference, text bytes, windowing, method). The reference is also measured
against itself: it must come out at exactly 0, or the measurement adds noise of its own.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.artifacts import RESULT_FILE, Store, content_key, sha256_file, write_json
from pipeline.recipe import DivergenceConfig, ParityConfig, RecipeError
from pipeline.toolenv import ToolEnv
from pipeline.workers.divergence_summary import summarize

STAGE = "divergence"
METHOD_VERSION = "1"


@dataclass(frozen=True)
class DivergenceResult:
    key: str
    metrics: dict[str, Any]
    cached: bool


def text_path(config: DivergenceConfig | ParityConfig) -> Path:
    """The text on this machine ('stdlib:difflib' is the standard library's difflib.py)."""
    path = config.path()
    if path is None:  # load_recipe checked it; the file went away since
        raise RecipeError(f"text {config.text!r} is no longer there")
    return path


def key(config: DivergenceConfig, variant_key: str, reference_key: str, method: str = METHOD_VERSION) -> str:
    return content_key(STAGE, variant_key, reference_key, sha256_file(text_path(config)),
                       config.windows, config.window_tokens, method)


def run(config: DivergenceConfig, worker: str, variant_path: Path, variant_key: str, reference_path: Path,
        reference_key: str, store: Store, env: ToolEnv, threads: int) -> DivergenceResult:
    div_key = key(config, variant_key, reference_key)
    if store.has(STAGE, div_key):
        return DivergenceResult(div_key, store.result(STAGE, div_key), cached=True)
    with store.building(STAGE, div_key) as scratch:
        metrics = env.run_worker(worker, {
            "reference_path": str(reference_path), "variant_path": str(variant_path),
            "text_path": str(text_path(config)), "windows": config.windows,
            "window_tokens": config.window_tokens, "threads": threads,
        }, scratch, "divergence.log")
        write_json(scratch / RESULT_FILE, metrics)
    return DivergenceResult(div_key, metrics, cached=False)


# --- served engines: top-k prompt logprobs ------------------------------------------------

# One position of a window: (log P(actual token), {token id: logprob} of the top-k and the actual token).
Position = tuple[float, dict[int, float]]


class ServesTopLogprobs(Protocol):
    max_top_logprobs: int

    def tokenize(self, text: str) -> list[int]: ...

    def prompt_top_logprobs(self, token_ids: list[int], k: int) -> list[Position]: ...


def served_method(k: int) -> str:
    return f"served-top{k}-v1"


def _windows(config: DivergenceConfig, engine: ServesTopLogprobs) -> list[list[int]]:
    tokens = engine.tokenize(text_path(config).read_text())
    size = config.window_tokens
    windows = [tokens[i:i + size] for i in range(0, len(tokens) - size + 1, size)][: config.windows]
    if not windows:
        raise ValueError(f"divergence text has {len(tokens)} tokens, fewer than one window of {size}")
    return windows


def _collect(config: DivergenceConfig, engine: ServesTopLogprobs) -> dict[str, Any]:
    windows = _windows(config, engine)
    k = engine.max_top_logprobs
    return {"k": k, "token_ids": windows,
            "positions": [[[lp, [[t, v] for t, v in top.items()]] for lp, top in engine.prompt_top_logprobs(w, k)]
                          for w in windows]}


def _positions(collected: dict[str, Any]) -> list[list[Position]]:
    return [[(lp, {int(t): v for t, v in top}) for lp, top in window] for window in collected["positions"]]


def reference_key(config: DivergenceConfig, reference_key_: str, k: int) -> str:
    return content_key(STAGE, "reference-top-logprobs", reference_key_, sha256_file(text_path(config)),
                       config.windows, config.window_tokens, served_method(k))


def run_served(config: DivergenceConfig, engine: ServesTopLogprobs, variant_key: str, reference_key_: str,
               store: Store) -> DivergenceResult:
    """Divergence of the variant being served by `engine`; when it is the reference, first keep its
    top-k logprobs for the variants after it (and then compare it with itself: a second pass)."""
    k = engine.max_top_logprobs
    div_key = key(config, variant_key, reference_key_, served_method(k))
    if store.has(STAGE, div_key):
        return DivergenceResult(div_key, store.result(STAGE, div_key), cached=True)
    ref_key = reference_key(config, reference_key_, k)
    if variant_key == reference_key_ and not store.has(STAGE, ref_key):
        with store.building(STAGE, ref_key) as scratch:
            write_json(scratch / RESULT_FILE, _collect(config, engine))
    if not store.has(STAGE, ref_key):
        raise ValueError("the reference's top-k logprobs were never collected (did its server run?)")
    started = time.monotonic()
    reference = store.result(STAGE, ref_key)
    if _windows(config, engine) != reference["token_ids"]:
        raise ValueError("reference and variant tokenize the divergence text differently: not comparable")
    variant = [engine.prompt_top_logprobs(w, k) for w in reference["token_ids"]]
    metrics = {**topk_metrics(_positions(reference), variant, k), "window_tokens": config.window_tokens,
               "seconds": round(time.monotonic() - started, 2)}
    with store.building(STAGE, div_key) as scratch:
        write_json(scratch / RESULT_FILE, metrics)
    return DivergenceResult(div_key, metrics, cached=False)


def topk_metrics(reference: list[list[Position]], variant: list[list[Position]], k: int) -> dict[str, Any]:
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
