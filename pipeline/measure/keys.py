"""Every measurement's content key for one variant, computed in one place (the plan and the variant
function both read it). Each key holds everything that decides its numbers, so a changed engine
build, engine setting, tool version or task file redoes the measurement instead of reusing one:

- evals: artifact, engine identity, each task as it runs (options, metric, filter) and the hash of
  its config and data files, lm-eval version, scorer version; evaluated sequentially, also what it
  stops on (the reference's eval key, the looks, the gate's confidence and tolerances);
- divergence: variant and reference artifacts, engine identity, text bytes, windowing, method;
- parity: artifact, engine identity, parity config, the transformers reference's versions;
- load: artifact, engine build, every serving setting, the workload and sweep, GuideLLM's version.

The engine identity is its name, its build (with the device class its kernels are chosen for) and
its settings minus those that change only speed (`EngineConfig.speed_only`), as the variant is served
(its KV cache type).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import specs
from pipeline.measure import NotMeasurable, divergence, evals, load, parity, tasks
from pipeline.recipe.schema import Recipe, VariantConfig
from pipeline.toolenv import TRANSFORMERS, tool_env


@dataclass(frozen=True)
class EngineIdentity:
    engine: str
    build: str | None  # None: its environment is not set up yet (the run refuses to start then)
    numerics: dict[str, Any]  # the settings that can change a number a measurement reads

    def key_part(self) -> dict[str, Any]:
        return {"engine": self.engine, "build": self.build, "settings": self.numerics}


def engine_identity(recipe: Recipe, engine: str, envs_root: Path, variant: VariantConfig | None = None
                    ) -> EngineIdentity:
    """The engine as `variant` is served on it (its KV cache type), or as its section says."""
    spec = specs.engine(engine)
    config = recipe.engine_config(engine, variant)
    return EngineIdentity(engine, spec.build(tool_env(spec.env, envs_root)), config.keyed_settings(config.speed_only))


@dataclass(frozen=True, kw_only=True)
class MeasurementKeys:
    evals: str
    load: str
    parity: str  # used for references only
    divergence: str | None  # None: no reference to compare with, or the engine cannot measure it
    divergence_method: str | None
    reference_evals: str | None = None  # sequential evaluation: the reference evals the variant's stop on


def keys_for(recipe: Recipe, variant: VariantConfig, artifact_key: str, reference_key: str | None,
             envs_root: Path) -> MeasurementKeys:
    identity = engine_identity(recipe, variant.engine, envs_root, variant)
    # the reference is served as the engine's section says (a reference has no KV cache type of its own)
    reference_identity = engine_identity(recipe, variant.engine, envs_root)
    spec = specs.engine(variant.engine)
    engine_env = tool_env(spec.env, envs_root)
    transformers_env = tool_env(TRANSFORMERS, envs_root)
    try:
        method = divergence.method(recipe.capabilities(variant.engine))
    except NotMeasurable:
        method = None
    resolved = tasks.resolve(recipe.evals, recipe.engines_used(), envs_root)
    lm_eval_version = engine_env.version("lm_eval")
    reference_evals = stopping = None
    if recipe.evals.sequential is not None and reference_key is not None and not variant.reference:
        reference_evals = evals.key(resolved, recipe.evals, reference_key, reference_identity.key_part(),
                                    lm_eval_version)
        stopping = {"reference_evals": reference_evals, "sequential": recipe.evals.sequential.model_dump(),
                    "confidence": recipe.gates.confidence, "iters": recipe.gates.bootstrap_iters,
                    "tolerances": {t.label: evals.tolerance(t, recipe.gates) for t in resolved}}
    return MeasurementKeys(
        evals=evals.key(resolved, recipe.evals, artifact_key, identity.key_part(), lm_eval_version, stopping),
        reference_evals=reference_evals,
        load=load.key(recipe.load, recipe.engine_config(variant.engine, variant), artifact_key, identity.build,
                      tool_env(load.ENV, envs_root).version("guidellm")),
        parity=parity.key(recipe.parity, artifact_key, identity.key_part(),
                          {"transformers": transformers_env.version("transformers"),
                           "torch": transformers_env.version("torch")}),
        divergence=(divergence.key(recipe.divergence, artifact_key, reference_key, method, identity.key_part())
                    if reference_key is not None and method is not None else None),
        divergence_method=method,
    )
