"""Plan: the recipe's variants × stages with their content keys, and what is already cached.

Computing keys needs no heavy tool, so `quantgate plan` shows what a run would do in a second.
"""

from __future__ import annotations

from dataclasses import dataclass

import pipeline.quantize.gguf  # noqa: F401  (registers the quantizers whose keys the plan computes)
import pipeline.quantize.llmcompressor  # noqa: F401
from pipeline import measure
from pipeline.artifacts import Store, content_key
from pipeline.measure import bench, evals
from pipeline.quantize import STAGE as VARIANTS_STAGE
from pipeline.quantize import quantizer_for
from pipeline.recipe import LocalSource, Recipe
from pipeline.settings import Settings
from pipeline.source import STAGE as SOURCE_STAGE
from pipeline.source import SourceResult, source_fingerprint


@dataclass(frozen=True)
class PlannedVariant:
    name: str
    kind: str
    engine: str
    reference: bool
    params: dict
    artifact_key: str
    eval_key: str
    bench_key: str
    quantize_cached: bool
    eval_cached: bool
    bench_cached: bool


@dataclass(frozen=True)
class Plan:
    recipe_hash: str
    source_key: str
    source_cached: bool
    variants: list[PlannedVariant]

    @property
    def work_left(self) -> int:
        return sum(not (v.quantize_cached and v.eval_cached and v.bench_cached) for v in self.variants)


def make_plan(recipe: Recipe, settings: Settings) -> Plan:
    store = Store(settings.artifacts)
    sha, _ = source_fingerprint(recipe.model)
    source_key = content_key("source", sha)
    source_cached = isinstance(recipe.model, LocalSource) or store.has(SOURCE_STAGE, source_key)
    # Keys only: a stand-in result whose key is what the source stage will produce.
    source = SourceResult(source_key, store.entry(SOURCE_STAGE, source_key), sha)
    planned = []
    for variant in recipe.variants:
        artifact_key = quantizer_for(variant.kind, settings.envs, recipe).key(variant, source)
        eval_key, bench_key = measure.keys(recipe, variant.engine, artifact_key)
        planned.append(PlannedVariant(
            variant.name, variant.kind, variant.engine, variant.reference, variant.quantize_params(),
            artifact_key, eval_key, bench_key,
            store.has(VARIANTS_STAGE, artifact_key), store.has(evals.STAGE, eval_key), store.has(bench.STAGE, bench_key),
        ))
    return Plan(recipe.content_hash(), source_key, source_cached, planned)
