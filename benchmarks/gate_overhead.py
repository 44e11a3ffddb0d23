"""Benchmark: what the quality gate adds per variant — the divergence pass and the paired statistics.

Runs on the artifacts a `make demo` left behind: for each non-reference variant it times a fresh
divergence pass (in a scratch store, so nothing cached is reused) and the paired bootstrap over
every task's per-item results. On a served engine (vLLM) the divergence pass needs the server, so
its time is the one the demo run recorded while serving the variant. Writes JSON to --out and
prints a table.

Usage: python -m benchmarks.gate_overhead [--recipe recipes/demo.yaml] [--out artifacts/benchmarks/gate_overhead.json]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

from pipeline import specs
from pipeline.artifacts import Store, write_json
from pipeline.engines import EngineContext
from pipeline.measure import divergence, evals
from pipeline.measure.keys import engine_identity, keys_for
from pipeline.measure.stats import paired_drop
from pipeline.plan import make_plan
from pipeline.quantize import Artifact
from pipeline.recipe.load import load_recipe
from pipeline.settings import Settings
from pipeline.toolenv import tool_env


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="recipes/demo.yaml")
    parser.add_argument("--out", default="artifacts/benchmarks/gate_overhead.json")
    args = parser.parse_args()
    settings = Settings()
    recipe = load_recipe(args.recipe)
    plan = make_plan(recipe, settings)
    store = Store(settings.artifacts)
    missing = [v.name for v in plan.variants if not (v.quantize_cached and v.eval_cached)]
    if missing:
        raise SystemExit(f"run `make demo` first: no cached artifact/evals for {', '.join(missing)}")

    def artifact(name: str) -> Artifact:
        planned = next(v for v in plan.variants if v.name == name)
        folder = store.entry("variants", planned.artifact_key)
        model = folder / ("model.gguf" if planned.kind == "gguf" else "model")
        return Artifact(name, planned.artifact_key, folder, model, store.result("variants", planned.artifact_key), True)

    rows = []
    for variant in recipe.variants:
        if variant.reference:
            continue
        ref_variant = recipe.reference_for(variant.engine)
        ours, ref = artifact(variant.name), artifact(ref_variant.name)
        capabilities = recipe.capabilities(variant.engine)
        engine = EngineContext(variant.engine, capabilities, tool_env(specs.engine(variant.engine).env, settings.envs))
        if not divergence.needs_server(capabilities):
            with tempfile.TemporaryDirectory() as scratch:
                started = time.perf_counter()
                identity = engine_identity(recipe, variant.engine, settings.envs).key_part()
                div_metrics = divergence.run(engine, ours, ref, Store(Path(scratch)), recipe.divergence, identity,
                                             recipe.timeouts.divergence)
                div_seconds, div_how = time.perf_counter() - started, "re-run, full logits in-process"
        else:
            served_key = keys_for(recipe, variant, ours.key, ref.key, settings.envs).divergence
            div_metrics = divergence.cached(store, served_key)
            div_seconds, div_how = div_metrics.seconds, "recorded by the demo run while served (top-k)"
        result = evals.cached(store, keys_for(recipe, variant, ours.key, ref.key, settings.envs).evals)
        ref_result = evals.cached(store, keys_for(recipe, ref_variant, ref.key, ref.key, settings.envs).evals)
        started = time.perf_counter()
        items = 0
        for task in result.tasks:
            reference_items = ref_result.values(task)
            paired_drop(reference_items, result.values(task), recipe.gates.confidence, recipe.gates.bootstrap_iters)
            items += len(reference_items)
        stats_seconds = time.perf_counter() - started
        rows.append({
            "variant": variant.name,
            "divergence_seconds": round(div_seconds, 2),
            "divergence_how": div_how,
            "divergence_worker_seconds": div_metrics.seconds,
            "divergence_tokens": div_metrics.n_tokens,
            "kld_mean": div_metrics.kld_mean,
            "paired_stats_seconds": round(stats_seconds, 4),
            "paired_items": items,
            "bootstrap_iters": recipe.gates.bootstrap_iters,
            "eval_seconds_for_comparison": result.seconds,
        })
    report = {"recipe": str(args.recipe), "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
              "divergence": recipe.divergence.model_dump(), "rows": rows,
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json(Path(args.out), report)
    print(f"{'variant':12} {'divergence s':>13} {'tokens':>7} {'paired stats s':>15} {'items':>6} {'evals s':>8}  divergence")
    for r in rows:
        print(f"{r['variant']:12} {r['divergence_seconds']:13.1f} {r['divergence_tokens']:7d}"
              f" {r['paired_stats_seconds']:15.3f} {r['paired_items']:6d} {r['eval_seconds_for_comparison']:8.1f}"
              f"  {r['divergence_how']}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
