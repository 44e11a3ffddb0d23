"""Plan: the recipe's variants × stages with their content keys, and what is already cached.

Computing keys needs no heavy tool, so `quantgate plan` shows what a run would do in a second.
Keys come from the stage modules themselves, which `measure_variant` uses too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline import compat, specs
from pipeline.artifacts import Store, content_key
from pipeline.measure import evals, load
from pipeline.measure.keys import keys_for
from pipeline.quantize import STAGE as VARIANTS_STAGE
from pipeline.quantize import quantizer_for
from pipeline.recipe.schema import LocalSource, Recipe, VariantConfig
from pipeline.settings import Settings
from pipeline.source import STAGE as SOURCE_STAGE
from pipeline.source import SourceResult, source_fingerprint
from pipeline.toolenv import TRANSFORMERS


@dataclass(frozen=True)
class PlannedVariant:
    name: str
    kind: str
    engine: str
    reference: bool
    params: dict
    artifact_key: str
    eval_key: str
    load_key: str
    quantize_cached: bool
    eval_cached: bool
    load_cached: bool
    refused: str | None = None  # measured not to run on this host's engine build: why
    kv_cache: str | None = None  # the KV cache type it is served with (None: the engine section's)


@dataclass(frozen=True)
class Plan:
    recipe_hash: str
    source_key: str
    source_cached: bool
    variants: list[PlannedVariant]
    warnings: tuple[str, ...] = ()  # schemes never measured on this host's engine build

    @property
    def work_left(self) -> int:
        return sum(not (v.refused or v.quantize_cached and v.eval_cached and v.load_cached) for v in self.variants)

    def refused(self) -> dict[str, str]:
        return {v.name: v.refused for v in self.variants if v.refused}


def make_plan(recipe: Recipe, settings: Settings) -> Plan:
    store = Store(settings.artifacts, verify=False)  # says what exists; a run verifies before it reuses
    sha, _ = source_fingerprint(recipe.model)
    source_key = content_key("source", sha)
    source_cached = isinstance(recipe.model, LocalSource) or store.has(SOURCE_STAGE, source_key)
    # Keys only: a stand-in result whose key is what the source stage will produce.
    source = SourceResult(source_key, store.entry(SOURCE_STAGE, source_key), sha)
    planned, warnings = [], []
    for variant in recipe.variants:
        artifact_key = quantizer_for(variant.kind, settings.envs, recipe).key(variant, source)
        keys = keys_for(recipe, variant, artifact_key, None, settings.envs)
        eval_key, load_key = keys.evals, keys.load
        refused, warning = engine_build_check(variant, settings.envs)
        warnings += [warning] if warning else []
        planned.append(PlannedVariant(
            variant.name, variant.kind, variant.engine, variant.reference, variant.quantize_params(),
            artifact_key, eval_key, load_key,
            store.has(VARIANTS_STAGE, artifact_key), store.has(evals.STAGE, eval_key), store.has(load.STAGE, load_key),
            refused, variant.kv_cache,
        ))
    return Plan(recipe.content_hash(), source_key, source_cached, planned, tuple(warnings))


def required_envs(recipe: Recipe) -> list[str]:
    """The tool environments this recipe's run needs: transformers (model source, engine parity),
    GuideLLM (the load sweep), each variant's quantizer and each engine used."""
    names = {TRANSFORMERS, load.ENV}
    for variant in recipe.variants:
        if (env := specs.quantizer_for_kind(variant.kind).env) is not None:
            names.add(env)
        names.add(specs.engine(variant.engine).env)
    return sorted(names)


def engine_build_check(variant: VariantConfig, envs_root: Path) -> tuple[str | None, str | None]:
    """(why the variant cannot run on this host's engine build, a warning that it was never measured
    here), from the measured table (pipeline/engine_compat.json); (None, None) when it runs or the
    engine declares no builds to look up."""
    spec = specs.engine(variant.engine)
    if not spec.distributions:
        return None, None  # an engine that runs every format it declares (llama.cpp: tested per type)
    build = compat.installed_build(spec.distributions, envs_root / spec.env)
    if build is None:
        return None, None  # no environment yet: `run` says so when it needs it
    device = compat.device_class(build)
    params = variant.quantize_params()
    scheme = " ".join([variant.kind] + [f"{k}={v}" for k, v in params.items() if k not in ("kind", "ignore")])
    checks = [(scheme, variant.kind, params)]
    if variant.kv_cache is not None:  # the KV cache type is looked up as a scheme of its own
        checks.append((f"KV cache {variant.kv_cache}", "kv_cache", {"dtype": variant.kv_cache}))
    warnings = []
    for what, kind, looked_up in checks:
        found = compat.measured(build, device, kind, looked_up)
        if found is None:
            warnings.append(f"{variant.name}: {what} was never measured on {build} ({device}); the run will tell"
                            " (add the result to pipeline/engine_compat.json)")
        elif not found.runs:
            return f"{what} does not run on {build} ({device}), measured {found.measured}: {found.note}", None
    return None, "; ".join(warnings) or None
