"""Divergence of a variant vs its engine's reference on a fixed text: KL, top-1 flips, perplexity.

Cached on (variant, reference, text bytes, windowing). The reference is also measured against
itself: it must come out at exactly 0, or the measurement adds noise of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.artifacts import RESULT_FILE, Store, content_key, sha256_file, write_json
from pipeline.recipe import DivergenceConfig, ParityConfig, RecipeError
from pipeline.toolenv import ToolEnv

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


def key(config: DivergenceConfig, variant_key: str, reference_key: str) -> str:
    return content_key(STAGE, variant_key, reference_key, sha256_file(text_path(config)),
                       config.windows, config.window_tokens, METHOD_VERSION)


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
