"""The pipeline run, as one flat sequence you can step through:

recipe -> plan -> source -> for each variant (references first): measure_variant -> decide -> record.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from pipeline import capacity, model_info, plots, promote, report, source, track
from pipeline.measure import tasks
from pipeline.measure.evals import EvalResult
from pipeline.artifacts import Store
from pipeline.plan import Plan, make_plan, required_envs
from pipeline.quantize import Artifact
from pipeline.recipe.schema import Recipe
from pipeline.settings import Settings
from pipeline.toolenv import TRANSFORMERS, tool_env
from pipeline.variant import VariantJob, VariantResult, measure_variant


@dataclass(frozen=True)
class RunOutcome:
    recipe: Recipe
    plan: Plan
    results: list[VariantResult]
    decision: promote.Decision
    report: report.Report
    report_path: Path
    seconds: float


def broken(results: list[VariantResult]) -> list[str]:
    """Why a run's decision rests on failures rather than on measurements: a reference that failed,
    or every other variant failing. Empty for a run that measured what it set out to, whatever the
    gates then said."""
    def failed(r: VariantResult) -> str | None:  # the evidence every verdict needs
        return r.quantize_error or r.eval_error or r.load_error

    why = [f"reference {r.name}: {failed(r)}" for r in results if r.reference and failed(r)]
    others = [r for r in results if not r.reference and r.not_run is None]
    if others and all(failed(r) for r in others):
        why.append(f"every variant failed ({', '.join(r.name for r in others)})")
    return why


def run(recipe: Recipe, recipe_path: Path, settings: Settings, say: Callable[[str], None]) -> RunOutcome:
    started = time.monotonic()
    for name in required_envs(recipe):
        tool_env(name, settings.envs).require()
    plan = make_plan(recipe, settings)
    for warning in plan.warnings:
        say(f"warning: {warning}")
    say(f"plan: {len(plan.variants)} variants, {plan.work_left} with work left")
    refused = plan.refused()

    say("model source: materialising" if not plan.source_cached else "model source: cached")
    store = Store(settings.artifacts)  # one for the run: a shared step that fails is not retried
    model = source.run(recipe.model, store, tool_env(TRANSFORMERS, settings.envs), recipe.timeouts.source)

    results: list[VariantResult] = []
    references: dict[str, Artifact] = {}
    # References first: every other variant's deltas are measured against them.
    for variant in sorted(recipe.variants, key=lambda v: not v.reference):
        label = f"[{variant.name}]"
        if reason := refused.get(variant.name):
            say(f"{label} not run: {reason}")
            results.append(VariantResult(name=variant.name, engine=variant.engine, reference=variant.reference,
                                         not_run=f"not run on this host: {reason}"))
            continue
        job = VariantJob(recipe=recipe, variant=variant, source=model, reference=references.get(variant.engine),
                         recipe_hash=plan.recipe_hash, artifacts_root=settings.artifacts, envs_root=settings.envs)
        result = measure_variant(job, say=lambda msg, label=label: say(f"{label} {msg}"), store=store)
        if variant.reference and result.artifact is not None:
            references[variant.engine] = result.artifact
        for failure in result.failures():
            say(f"{label} {failure}")
        results.append(result)

    resolved = tasks.resolve(recipe.evals, recipe.engines_used(), settings.envs)
    gated = [label for task in resolved for label in task.gated_labels()]
    tolerances = {label: task.ref.tolerance if task.ref.tolerance is not None else recipe.gates.tolerance(task.label)
                  for task in resolved for label in task.gated_labels()}
    info = model_info.from_config(model.model_dir)
    capacities = {r.name: capacity_of(r, recipe, info) for r in results}
    decision = promote.decide([evidence(r, capacities[r.name]) for r in results], gated, recipe.gates,
                              recipe.promotion, tolerances)
    say(f"decision: {decision.reason}")

    tracking_uri = settings.tracking_uri or recipe.tracking.uri or settings.default_tracking_uri()
    tracker = track.Tracker(tracking_uri, recipe.tracking.experiment, settings.mlflow_artifact_root())
    summary = report.build(recipe.name, plan.recipe_hash, gated, results, capacities, decision, recipe.load.level_name,
                           recipe.slo.percentile)
    run_name = f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    charts = draw_charts(summary, recipe, settings.artifacts / "reports" / run_name)
    parent_id, registry = track.record(tracker, run_name, recipe, recipe_path, summary, results, decision, charts)
    if registry:
        say(f"registry: {registry.note}")
    summary = summary.with_tracking(registry, parent_id, tracking_uri)
    report_path = settings.artifacts / "reports" / f"{run_name}.json"
    summary.save(report_path)
    return RunOutcome(recipe, plan, results, decision, summary, report_path, round(time.monotonic() - started, 1))


def draw_charts(summary: report.Report, recipe: Recipe, folder: Path) -> dict[str, Path]:
    """Latency-vs-load PNGs: variant name -> its chart, and "" -> all variants on one chart."""
    axis = "concurrent streams" if recipe.load.profile == "concurrency" else "requests/s"
    charts = {row.variant: plots.variant_chart(row, recipe.slo, axis, folder / f"load-{row.variant}.png")
              for row in summary.rows}
    charts[""] = plots.comparison_chart(summary.rows, recipe.slo, axis, folder / "load-all-variants.png")
    return {name: path for name, path in charts.items() if path is not None}


def capacity_of(result: VariantResult, recipe: Recipe, info: model_info.ModelInfo) -> capacity.Capacity | None:
    """The load sweep judged against the SLO and priced on the recipe's hardware; None if not measured."""
    if result.load is None or result.artifact is None:
        return None
    served = recipe.capabilities(result.engine)
    memory = capacity.memory_need(int(result.artifact.manifest["file_bytes"]), info.num_layers,
                                  info.kv_heads or info.hidden_size // info.head_dim, info.head_dim,
                                  served.max_context, served.concurrency)
    return capacity.assess(result.load, recipe.load, recipe.slo, recipe.hardware, memory)


def evidence(result: VariantResult, measured: capacity.Capacity | None) -> promote.VariantEvidence:
    """What promotion reads of one variant's results."""
    if result.artifact is None:
        why = result.not_run or f"quantize failed: {result.quantize_error or 'not measured'}"
        return promote.VariantEvidence(name=result.name, engine=result.engine, is_reference=result.reference,
                                       tasks={}, alignment_passed=None, eval_error=why, capacity=None, load_error=why,
                                       divergence=None, divergence_error=why, not_run=result.not_run)
    evals = result.evals
    return promote.VariantEvidence(
        name=result.name, engine=result.engine, is_reference=result.reference,
        tasks={label: task_items(evals, label) for label in evals.tasks} if evals else {},
        alignment_passed=evals.alignment.passed if evals else None, eval_error=result.eval_error,
        capacity=measured, load_error=result.load_error, size_bytes=int(result.artifact.manifest["file_bytes"]),
        divergence=asdict(result.divergence) if result.divergence else None, divergence_error=result.divergence_error,
        parity=asdict(result.parity) if result.reference and result.parity else None,
        parity_error=result.parity_error if result.reference else None,
    )


def task_items(evals: EvalResult, label: str) -> promote.TaskItems:
    items = evals.items(label)
    choices = all("choice" in item and "gold" in item for item in items)
    return promote.TaskItems(metric=evals.tasks[label].metric, values=[float(item["value"]) for item in items],
                             gold=[int(item["gold"]) for item in items] if choices else None,
                             choice=[int(item["choice"]) for item in items] if choices else None,
                             n_choices=[int(item["n_choices"]) for item in items] if choices else None)
