"""The pipeline run, as one flat sequence you can step through:

recipe -> plan -> source -> for each variant: quantize -> serve (evals, bench) -> decide -> record -> register.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

import pipeline.engines.llamacpp  # noqa: F401  (registers the engines)
import pipeline.engines.vllm  # noqa: F401
import pipeline.quantize.gguf  # noqa: F401  (registers the quantizers)
import pipeline.quantize.llmcompressor  # noqa: F401
from pipeline import measure, promote, source
from pipeline.artifacts import Store, write_json
from pipeline.plan import Plan, check_engine_builds, make_plan
from pipeline.quantize import Artifact, quantizer_for
from pipeline.recipe import Recipe, flat_params
from pipeline.settings import Settings
from pipeline.toolenv import llamacpp_env
from pipeline.track import RegistryOutcome, Tracker


@dataclass
class VariantOutcome:
    name: str
    engine: str
    reference: bool
    artifact: Artifact | None
    measurements: measure.Measurements | None
    quantize_error: str | None = None


@dataclass
class RunOutcome:
    recipe: Recipe
    plan: Plan
    variants: list[VariantOutcome]
    decision: promote.Decision
    registry: RegistryOutcome | None
    parent_run_id: str
    tracking_uri: str
    seconds: float
    report_path: Path


def run(recipe: Recipe, recipe_path: Path, settings: Settings, say: Callable[[str], None]) -> RunOutcome:
    started = time.monotonic()
    env = llamacpp_env(settings.envs)
    env.require()
    for warning in check_engine_builds(recipe, recipe_path, settings.envs):
        say(f"warning: {warning}")
    plan = make_plan(recipe, settings)
    say(f"plan: {len(plan.variants)} variants, {plan.work_left} with work left")
    store = Store(settings.artifacts)

    say("model source: materialising" if not plan.source_cached else "model source: cached")
    model = source.run(recipe.model, store, env)

    outcomes: list[VariantOutcome] = []
    references: dict[str, Artifact] = {}
    # References first: every other variant's deltas are measured against them.
    for variant in sorted(recipe.variants, key=lambda v: not v.reference):
        label = f"[{variant.name}]"
        outcome = VariantOutcome(variant.name, variant.engine, variant.reference, None, None)
        outcomes.append(outcome)
        t0 = time.monotonic()
        try:
            outcome.artifact = quantizer_for(variant.kind, settings.envs, recipe).quantize(
                variant, model, store, plan.recipe_hash)
        except Exception as exc:  # one broken variant must not sink the others; it fails its gate
            outcome.quantize_error = f"{type(exc).__name__}: {exc}"
            say(f"{label} quantize FAILED: {outcome.quantize_error}")
            continue
        if variant.reference:
            references[variant.engine] = outcome.artifact
        manifest = outcome.artifact.manifest
        say(f"{label} quantize {'cached' if outcome.artifact.cached else f'done in {time.monotonic() - t0:.1f} s'}"
            f" ({manifest['file_bytes'] / 1e6:.0f} MB, {manifest['bits_per_weight']} bits/weight)")
        outcome.measurements = measure.run(recipe, variant.engine, outcome.artifact, references.get(variant.engine),
                                           store, settings.envs, model,
                                           say=lambda msg, label=label: say(f"{label} {msg}"))
        m = outcome.measurements
        for what, error in (("engine parity", m.parity_error), ("divergence", m.divergence_error),
                            ("evals", m.eval_error), ("bench", m.bench_error)):
            if error:
                say(f"{label} {what} FAILED: {error}")

    decision = promote.decide([_evidence(o) for o in outcomes], recipe.evals.tasks, recipe.gates, recipe.slo,
                              recipe.hardware)
    say(f"decision: {decision.reason}")

    tracking_uri = settings.tracking_uri or recipe.tracking.uri or settings.default_tracking_uri()
    tracker = Tracker(tracking_uri, recipe.tracking.experiment, settings.mlflow_artifact_root())
    report = build_report(recipe, plan, outcomes, decision)
    registry = None
    run_name = f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    with tracker.parent_run(run_name, flat_params(recipe.model_dump(exclude={"variants"})),
                            {"recipe": str(recipe_path), "recipe_hash": plan.recipe_hash}) as parent_id:
        child_ids = {}
        for outcome in outcomes:
            verdict = decision.verdict(outcome.name)
            child_ids[outcome.name] = tracker.child_run(
                outcome.name,
                flat_params(next(v for v in recipe.variants if v.name == outcome.name)),
                variant_metrics(outcome, verdict, report),
                {"verdict": "pass" if verdict.passed else "fail", "promoted": str(verdict.promoted).lower(),
                 "reasons": "; ".join(verdict.reasons)[:5000] or "all checks passed",
                 "reference": str(outcome.reference).lower(), "engine": outcome.engine},
                variant_files(outcome),
            )
        if decision.winner:
            winner = next(o for o in outcomes if o.name == decision.winner)
            assert winner.artifact is not None
            registry = tracker.register(recipe.tracking.registered_model, recipe.tracking.alias,
                                        child_ids[winner.name], winner.artifact.model_path, winner.artifact.manifest)
            say(f"registry: {registry.note}")
        report["registry"] = registry.__dict__ if registry else None
        tracker.log_parent(parent_id, {"winner": decision.winner or "none", "decision": decision.reason},
                           {"decision.json": decision.to_json(), "report.json": report,
                            "recipe.yaml": yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)})
    report_path = settings.artifacts / "reports" / f"{run_name}.json"
    write_json(report_path, {**report, "mlflow_parent_run": parent_id, "tracking_uri": tracking_uri})
    return RunOutcome(recipe, plan, outcomes, decision, registry, parent_id, tracking_uri,
                      round(time.monotonic() - started, 1), report_path)


def _evidence(outcome: VariantOutcome) -> promote.VariantEvidence:
    m = outcome.measurements
    if outcome.artifact is None or m is None:
        why = f"quantize failed: {outcome.quantize_error or 'not measured'}"
        return promote.VariantEvidence(outcome.name, outcome.engine, outcome.reference, {}, None, why, None, why,
                                       None, why)
    correct = {task: m.evals.correct(task) for task in m.evals.tasks} if m.evals else {}
    alignment = m.evals.alignment.get("passed") if m.evals else None
    return promote.VariantEvidence(outcome.name, outcome.engine, outcome.reference, correct, alignment,
                                   m.eval_error, m.bench.to_json() if m.bench and not m.bench_error else None,
                                   m.bench_error, m.divergence, m.divergence_error,
                                   m.parity if outcome.reference else None,
                                   m.parity_error if outcome.reference else None)


def build_report(recipe: Recipe, plan: Plan, outcomes: list[VariantOutcome], decision: promote.Decision) -> dict:
    """One row per variant with the figures the summary table and MLflow show."""
    rows = []
    refs = {o.engine: o for o in outcomes if o.reference}
    for outcome in outcomes:
        verdict = decision.verdict(outcome.name)
        m = outcome.measurements
        manifest = outcome.artifact.manifest if outcome.artifact else {}
        ref_m = refs[outcome.engine].measurements if outcome.engine in refs else None
        row = {
            "variant": outcome.name, "engine": outcome.engine, "reference": outcome.reference,
            "quantization": manifest.get("quantization"), "file_mb": round(manifest["file_bytes"] / 1e6, 1) if manifest else None,
            "bits_per_weight": manifest.get("bits_per_weight"), "artifact_key": manifest.get("key"),
            "quantize_seconds": manifest.get("quantize_seconds"), "peak_rss_mb": manifest.get("peak_rss_mb"),
            "accuracy": {}, "delta": {}, "delta_upper": {}, "flips": {},
            "divergence": m.divergence if m else None,
            "parity": m.parity if m and outcome.reference else None,
            "bench": m.bench.to_json() if m and m.bench else None,
            "usd_per_1m_tokens": verdict.usd_per_1m_tokens, "passed": verdict.passed, "promoted": verdict.promoted,
            "reasons": verdict.reasons,
        }
        for task in recipe.evals.tasks:
            acc = m.evals.tasks[task].acc if m and m.evals and task in m.evals.tasks else None
            ref = (ref_m.evals.tasks[task].acc if ref_m and ref_m.evals and task in ref_m.evals.tasks else None)
            row["accuracy"][task] = acc
            row["delta"][task] = round(acc - ref, 4) if acc is not None and ref is not None else None
            if c := verdict.comparisons.get(task):
                row["delta_upper"][task] = round(c.drop_upper, 4)
                row["flips"][task] = {"right_to_wrong": c.right_to_wrong, "wrong_to_right": c.wrong_to_right,
                                      "mcnemar_p": round(c.mcnemar_p, 5)}
        rows.append(row)
    return {"recipe": recipe.name, "recipe_hash": plan.recipe_hash, "winner": decision.winner,
            "decision": decision.reason, "rows": rows}


def variant_metrics(outcome: VariantOutcome, verdict: promote.Verdict, report: dict) -> dict[str, float]:
    row = next(r for r in report["rows"] if r["variant"] == outcome.name)
    metrics: dict[str, float] = {"passed": float(verdict.passed), "promoted": float(verdict.promoted)}
    for task, acc in row["accuracy"].items():
        if acc is not None:
            metrics[f"{task}.acc"] = acc
        if row["delta"][task] is not None:
            metrics[f"{task}.delta_vs_reference"] = row["delta"][task]
        if task in row["delta_upper"]:
            metrics[f"{task}.drop_upper"] = row["delta_upper"][task]
            metrics[f"{task}.right_to_wrong"] = row["flips"][task]["right_to_wrong"]
            metrics[f"{task}.wrong_to_right"] = row["flips"][task]["wrong_to_right"]
    if row["parity"] and row["parity"].get("mean_abs_diff") is not None:
        metrics["engine_parity_mean_abs_diff"] = row["parity"]["mean_abs_diff"]
    for name in ("kld_mean", "kld_p99", "flip_rate", "ppl_ratio", "reference_tail_mass"):
        value = (row["divergence"] or {}).get(name)
        if value is not None:
            metrics[name] = value
    for name, value in (("size_mb", row["file_mb"]), ("bits_per_weight", row["bits_per_weight"]),
                        ("quantize_seconds", row["quantize_seconds"]), ("quantize_peak_rss_mb", row["peak_rss_mb"])):
        if value is not None:
            metrics[name] = value
    bench = row["bench"]
    if bench:
        metrics["output_tokens_per_s"] = bench["output_tokens_per_s"]
        metrics["error_rate"] = bench["error_rate"]
        for name in ("ttft_ms", "itl_ms", "e2e_ms"):
            for q in ("p50", "p95", "p99"):
                value = bench[name][q]
                if isinstance(value, (int, float)) and math.isfinite(value):
                    metrics[f"{name.removesuffix('_ms')}_{q}_ms"] = value
    if verdict.usd_per_1m_tokens is not None:
        metrics["usd_per_1m_tokens"] = verdict.usd_per_1m_tokens
    return metrics


def variant_files(outcome: VariantOutcome) -> dict[str, list[Path]]:
    """MLflow artifact folder -> files to log there."""
    files: dict[str, list[Path]] = {}
    if outcome.artifact:
        files["artifact"] = [outcome.artifact.folder / "manifest.json"]
    m = outcome.measurements
    if m and m.evals:
        files["evals"] = [m.evals.folder / "result.json", m.evals.folder / "alignment_probe.json"]
        files["evals"] += [m.evals.folder / score.samples_file for score in m.evals.tasks.values()]
    if m and m.bench_folder:
        files["bench"] = [m.bench_folder / "result.json"]
    if m and m.server_log:
        files["logs"] = [m.server_log]
    return files
