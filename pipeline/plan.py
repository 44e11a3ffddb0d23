"""Plan: the recipe's variants × stages with their content keys, and what is already cached.

Computing keys needs no heavy tool, so `quantgate plan` shows what a run would do in a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pipeline.quantize.gguf  # noqa: F401  (registers the quantizers whose keys the plan computes)
import pipeline.quantize.llmcompressor  # noqa: F401
from pipeline import measure
from pipeline import compat
from pipeline.artifacts import Store, content_key
from pipeline.measure import bench, evals
from pipeline.quantize import STAGE as VARIANTS_STAGE
from pipeline.quantize import quantizer_for
from pipeline.recipe import LocalSource, Recipe, RecipeError
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


def check_engine_builds(recipe: Recipe, recipe_path: Path, envs_root: Path) -> list[str]:
    """Refuse (RecipeError) a variant that the installed engine build was measured not to load;
    return a warning for each variant whose scheme was never measured on that build."""
    errors, warnings = [], []
    for i, variant in enumerate(recipe.variants):
        if variant.engine not in compat.ENGINE_DISTRIBUTIONS:
            continue  # llama.cpp loads every GGUF type it can write (tested per type)
        build = compat.installed_build(variant.engine, envs_root / variant.engine)
        if build is None:
            continue  # no environment yet: `run` says so when it needs it
        params = variant.quantize_params()
        scheme = " ".join([variant.kind] + [f"{k}={v}" for k, v in params.items() if k not in ("kind", "ignore")])
        found = compat.measured(build, variant.kind, params)
        if found is None:
            warnings.append(f"{variant.name}: {scheme} was never measured on {build}; the run will tell"
                            " (add the result to pipeline/engine_compat.json)")
        elif not found.loads:
            errors.append(f"variants[{i}] ({variant.name}): {scheme} does not load on {build}"
                          f" (measured {found.measured}: {found.note})")
    if errors:
        raise RecipeError(f"{recipe_path}: refused before any work\n  " + "\n  ".join(errors))
    return warnings
