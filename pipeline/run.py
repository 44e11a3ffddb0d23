"""The pipeline run, as one flat sequence you can step through:

recipe -> plan -> parent run -> source -> for each variant (references first): measure_variant ->
decide -> record. With `promotion.search: cheapest_first` the variants other than the references are
priced first (quantize and load sweep), then measured in full from the cheapest up (`search.py`).

One run of a recipe at a time on a host (a second waits, then reuses what the first made); an
interrupted run is finished by running it again, from what is cached, into the same MLflow parent run.
A run whose inputs are those of the last recorded run (the same recipe, measurements and code)
stops after planning: that run's decision and record stand (`--force record` records again).
"""

from __future__ import annotations

import hashlib
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from pipeline import (capacity, changes, model_info, plots, promote, report, report_document, search, secrecy,
                      source, track)
from pipeline.measure import tasks
from pipeline.measure.evals import EvalResult, tolerance as task_tolerance
from pipeline.measure.keys import keys_for
from pipeline.artifacts import Store, content_key
from pipeline.plan import Plan, make_plan, required_envs
from pipeline.quantize import Artifact
from pipeline.recipe.schema import Recipe, VariantConfig
from pipeline.report import Registry
from pipeline.settings import Settings
from pipeline.toolenv import TRANSFORMERS, tool_env
from pipeline.variant import EVERYTHING, LOAD_ONLY, VariantJob, VariantResult, measure_variant


# `--force STAGE`: the store stages each names
FORCEABLE = {"source": ("models",), "quantize": ("variants", "gguf-base", "imatrix"), "parity": ("parity",),
             "divergence": ("divergence",), "evals": ("evals",), "load": ("load",),
             "record": ()}  # no stored stage: decide and record again though nothing changed


class NotRecorded(Exception):
    """Everything was measured and cached, but the tracking store could not take the record."""


def own_cpu_seconds() -> float:
    """CPU time this process has used (not its workers' and servers'): what orchestration costs."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return round(usage.ru_utime + usage.ru_stime, 1)


@dataclass(frozen=True)
class RunOutcome:
    recipe: Recipe
    plan: Plan
    results: list[VariantResult]  # empty when nothing changed since the last recorded run
    report: report.Report
    report_path: Path
    seconds: float
    broken: list[str] = field(default_factory=list)  # see `broken`
    own_cpu_seconds: float = field(default_factory=own_cpu_seconds)  # the orchestrator's, not its tools'


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


def run(recipe: Recipe, recipe_path: Path, settings: Settings, say: Callable[[str], None],
        force: frozenset[str] = frozenset()) -> RunOutcome:
    """`force`: names from FORCEABLE whose entries are made again (and replaced) rather than reused."""
    started = time.monotonic()
    for name in required_envs(recipe):
        tool_env(name, settings.envs).require()
    # one for the run: a shared step that fails is not retried
    store = Store(settings.artifacts, say, force=frozenset(s for name in force for s in FORCEABLE[name]))
    recipe_hash = recipe.content_hash()
    with store.lock("runs", recipe_hash, f"another run of this recipe ({recipe_hash}) is in progress; waiting for it"):
        return _run(recipe, recipe_path, settings, say, store, started, "record" in force)


def inputs_fingerprint(plan: Plan, tracking_uri: str) -> str:
    """What a run's decision and record follow from: the recipe, every stage's content key, the
    orchestrator's code (a changed gate rule decides anew) and where it is recorded."""
    code = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")) + [package / "engine_compat.json"]:
        code.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return content_key("inputs", plan.recipe_hash, plan.source_key, code.hexdigest(), secrecy.redact_uris(tracking_uri),
                       [(v.name, v.artifact_key, v.eval_key, v.load_key, v.refused) for v in plan.variants])


def measured_as_before(recipe: Recipe, plan: Plan, last: report.Report, store: Store, settings: Settings) -> bool:
    """Whether every entry the last run's decision read is still there, untouched: each variant's
    artifact, load sweep, and (unless cheapest-first priced it only) its evals, divergence and, for a
    reference, engine parity. A missing one (a measurement that failed) would be tried again."""
    references = {v.engine: v.artifact_key for v in plan.variants if v.reference}
    configs = {v.name: v for v in recipe.variants}
    rows = {row.variant: row for row in last.rows}
    for planned in plan.variants:
        if planned.refused:
            continue
        row = rows.get(planned.name)
        if row is None:
            return False
        keys = keys_for(recipe, configs[planned.name], planned.artifact_key, references.get(planned.engine),
                        settings.envs)
        entries = [("variants", planned.artifact_key), ("load", keys.load)]
        if not row.skipped:
            entries += [("evals", keys.evals)] + ([("divergence", keys.divergence)] if keys.divergence else [])
            entries += [("parity", keys.parity)] if planned.reference else []
        if not all(store.untouched(stage, key) for stage, key in entries):
            return False
    return True


def last_recorded(reports: Path, recipe_name: str) -> tuple[Path, report.Report] | None:
    """The newest report of this recipe, if its run was recorded in full."""
    for path in sorted(reports.glob(f"{recipe_name}-*.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            last = report.Report.load(path)
        except (OSError, ValueError, TypeError, KeyError):
            continue  # unreadable or from an older layout: not evidence of anything
        if last.recipe == recipe_name:
            return (path, last) if last.mlflow_parent_run else None
    return None


def _run(recipe: Recipe, recipe_path: Path, settings: Settings, say: Callable[[str], None], store: Store,
         started: float, record_again: bool) -> RunOutcome:
    plan = make_plan(recipe, settings)
    for warning in plan.warnings:
        say(f"warning: {warning}")
    say(f"plan: {len(plan.variants)} variants, {plan.work_left} with work left")
    tracking_uri = settings.tracking_uri or recipe.tracking.uri or settings.default_tracking_uri()
    inputs = inputs_fingerprint(plan, tracking_uri)
    if not store.force and not record_again:
        last = last_recorded(settings.artifacts / "reports", recipe.name)
        if last and last[1].inputs == inputs and measured_as_before(recipe, plan, last[1], store, settings):
            path, summary = last
            say(f"nothing changed since run {path.stem} (same recipe, measurements and code): its decision and"
                f" MLflow record stand (parent run {summary.mlflow_parent_run}); --force record to record again")
            return RunOutcome(recipe, plan, [], summary, path, round(time.monotonic() - started, 1), summary.broken)
    refused = plan.refused()
    run_name = f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    tracker, parent = open_tracking(tracking_uri, recipe, recipe_path, settings, run_name, plan.recipe_hash, say)
    try:
        decided = _measure_and_decide(recipe, settings, say, store, plan, refused)
    except BaseException:
        if tracker and parent:
            _quietly(lambda: tracker.interrupted(parent))
        raise
    results, decision = decided.results, decided.decision

    summary = report.build(recipe.name, plan.recipe_hash, decided.gated, results, decided.capacities, decision,
                           recipe.load.level_name, recipe.slo.percentile, thresholds(recipe, decided.tolerances),
                           inputs=inputs, broken=broken(results))
    facts = changes.facts(getattr(recipe.model, "revision", None), results)
    summary = compare_with_last(summary, tracker, recipe.name, parent, facts, say)
    folder = settings.artifacts / "reports" / run_name
    charts = draw_charts(summary, recipe, folder)
    report_path = settings.artifacts / "reports" / f"{run_name}.json"
    summary.save(report_path)  # kept whether or not the tracking store takes it
    report_document.write(summary, run_name, folder, charts)

    def documents(registry: Registry | None, parent_id: str) -> list[Path]:
        """The report for people again, now with its MLflow run and registry outcome, to log."""
        files = report_document.write(summary.with_tracking(registry, parent_id, secrecy.redact_uris(tracking_uri)),
                                      run_name, folder, charts)
        return [files.markdown, files.html, *files.images]

    try:
        if tracker is None or parent is None:  # unreachable at the start: one more try
            tracker = track.Tracker(tracking_uri, recipe.tracking.experiment, settings.mlflow_artifact_root())
            parent, _ = track.open_parent(tracker, run_name, recipe, recipe_path, plan.recipe_hash)
        registry = track.record(tracker, parent, recipe, summary, results, decision, charts, documents, facts)
    except track.unavailable_errors() as exc:
        if tracker and parent:
            _quietly(lambda: tracker.interrupted(parent))
        raise NotRecorded(f"tracking store {secrecy.redact_uris(tracking_uri)} did not take the record"
                          f" ({secrecy.redact(_first_line(exc))}); everything measured is cached and the report is at"
                          f" {report_path}: run the same command again to record it") from None
    if registry:
        say(f"registry: {registry.note}")
    summary = summary.with_tracking(registry, parent, secrecy.redact_uris(tracking_uri))
    summary.save(report_path)
    return RunOutcome(recipe, plan, results, summary, report_path, round(time.monotonic() - started, 1),
                      summary.broken)


def compare_with_last(summary: report.Report, tracker: track.Tracker | None, recipe_name: str, parent: str | None,
                      facts: dict[str, str], say: Callable[[str], None]) -> report.Report:
    """The report with what changed since the last run of this recipe, said too."""
    if tracker is None or parent is None:
        return summary
    try:
        previous, since = track.since_last(tracker, recipe_name, parent, facts, summary)
    except track.unavailable_errors() as exc:
        say(f"warning: not compared with the last run ({secrecy.redact(_first_line(exc))})")
        return summary
    if previous is None:
        say("since the last run: this is the first complete run of this recipe in the experiment")
    else:
        say(f"since the last run ({previous}): " + ("; ".join(since) if since else "nothing changed"))
    return summary.with_changes(previous, since)


def open_tracking(uri: str, recipe: Recipe, recipe_path: Path, settings: Settings, run_name: str, recipe_hash: str,
                  say: Callable[[str], None]) -> tuple[track.Tracker | None, str | None]:
    """The tracker and the run's parent run (resumed if an interrupted run left it), or (None, None)
    with a warning when the store cannot be reached: measuring goes on, recording is tried at the end."""
    try:
        tracker = track.Tracker(uri, recipe.tracking.experiment, settings.mlflow_artifact_root())
        parent, resumed = track.open_parent(tracker, run_name, recipe, recipe_path, recipe_hash)
    except track.unavailable_errors() as exc:
        say(f"warning: tracking store {secrecy.redact_uris(uri)} unavailable ({secrecy.redact(_first_line(exc))});"
            " measuring anyway, recording at the end")
        return None, None
    say(f"MLflow parent run {parent}" + (" (resumed: an earlier run of this recipe stopped before it finished)"
                                         if resumed else ""))
    return tracker, parent


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _quietly(action: Callable[[], object]) -> None:
    """Best effort, for bookkeeping on the way out of a failure that is already being reported."""
    try:
        action()
    except Exception:  # noqa: BLE001 - the failure in flight is the one to report
        pass


@dataclass(frozen=True)
class Decided:
    """What measuring and deciding hands to recording."""

    results: list[VariantResult]
    decision: promote.Decision
    gated: list[str]  # the gated task labels
    capacities: dict[str, capacity.Capacity | None]
    tolerances: dict[str, float]  # gated task label -> the largest drop allowed


def _measure_and_decide(recipe: Recipe, settings: Settings, say: Callable[[str], None], store: Store, plan: Plan,
                        refused: dict[str, str]) -> Decided:
    say("model source: materialising" if not plan.source_cached else "model source: cached")
    model = source.run(recipe.model, store, tool_env(TRANSFORMERS, settings.envs), recipe.timeouts.source)

    resolved = tasks.resolve(recipe.evals, recipe.engines_used(), settings.envs)
    gated = [label for task in resolved for label in task.gated_labels()]
    tolerances = {label: task_tolerance(task, recipe.gates) for task in resolved for label in task.gated_labels()}
    info = model_info.from_config(model.model_dir)

    def judge(measured: list[VariantResult]) -> promote.Decision:
        return promote.decide([evidence(r, capacity_of(r, recipe, info)) for r in measured], gated, recipe.gates,
                              recipe.promotion, tolerances, recipe.evals.sequential)

    results: dict[str, VariantResult] = {}
    references: dict[str, Artifact] = {}

    def measure(variant: VariantConfig, what: frozenset[str] = EVERYTHING) -> VariantResult:
        label = f"[{variant.name}]"
        job = VariantJob(recipe=recipe, variant=variant, source=model, reference=references.get(variant.engine),
                         recipe_hash=plan.recipe_hash, artifacts_root=settings.artifacts, envs_root=settings.envs,
                         measure=what)
        result = measure_variant(job, say=lambda msg: say(f"{label} {msg}"), store=store)
        for failure in result.failures():
            say(f"{label} {failure}")
        return result

    # References first: every other variant's deltas are measured against them.
    order = sorted(recipe.variants, key=lambda v: not v.reference)
    for variant in order:
        if reason := refused.get(variant.name):
            say(f"[{variant.name}] not run: {reason}")
            results[variant.name] = VariantResult(name=variant.name, engine=variant.engine,
                                                  reference=variant.reference, kv_cache=variant.kv_cache,
                                                  not_run=f"not run on this host: {reason}")
    for variant in order:
        if variant.name in results or (not variant.reference and recipe.promotion.search == "cheapest_first"):
            continue
        result = results[variant.name] = measure(variant)
        if variant.reference and result.artifact is not None:
            references[variant.engine] = result.artifact
    if recipe.promotion.search == "cheapest_first":
        def priced(result: VariantResult) -> search.Priced:
            checks, cost = promote.price(evidence(result, capacity_of(result, recipe, info)))
            return search.Priced(result.name, cost if all(c.passed for c in checks) else None,
                                 measured=result.evals is not None)

        _cheapest_first([v for v in order if v.name not in results], results, measure, priced, judge, say)
    ordered = [results[v.name] for v in order]
    capacities = {r.name: capacity_of(r, recipe, info) for r in ordered}
    decision = judge(ordered)
    say(f"decision: {decision.reason}")
    return Decided(ordered, decision, gated, capacities, tolerances)


def _cheapest_first(candidates: list[VariantConfig], results: dict[str, VariantResult],
                    measure: Callable[[VariantConfig, frozenset[str]], VariantResult],
                    priced: Callable[[VariantResult], search.Priced],
                    judge: Callable[[list[VariantResult]], promote.Decision], say: Callable[[str], None]) -> None:
    """Price every candidate (quantize and load sweep), then evaluate them from the cheapest up
    (`search.py`); `results` holds the references, measured, and takes each candidate's result."""
    if len(candidates) == 1:  # nothing to order or leave out: one server start measures it all
        say(f"cheapest-first search: {candidates[0].name} is the only candidate; measured in one go")
        results[candidates[0].name] = measure(candidates[0], EVERYTHING)
        return
    references = [r for r in results.values() if r.reference]
    verdicts = judge(references) if references else None
    passed = [priced(r) for r in references if verdicts and verdicts.verdict(r.name).passed]
    for variant in candidates:
        results[variant.name] = measure(variant, LOAD_ONLY)
    prices = [priced(results[v.name]) for v in candidates if results[v.name].artifact is not None]
    say("cheapest-first search: " + ", ".join(
        f"{p.name} {promote.usd(p.cost)}" if p.cost else f"{p.name} cannot pass on load" for p in prices))
    by_name = {v.name: v for v in candidates}

    def evaluate(name: str) -> bool:
        priced_only = results[name]
        result = measure(by_name[name], EVERYTHING - LOAD_ONLY)
        if result.load is None:  # a sweep with failed requests is judged but not cached: keep the one priced
            result.load, result.load_error = priced_only.load, priced_only.load_error
        result.server_log = result.server_log or priced_only.server_log
        results[name] = result
        return judge([*references, result]).verdict(name).passed

    for name, why in search.cheapest_first(prices, passed, evaluate).items():
        say(f"[{name}] {why}")
        results[name].skipped = why


def thresholds(recipe: Recipe, tolerances: dict[str, float]) -> dict[str, float]:
    """What every verdict was judged by, under the names MLflow params and the report give them."""
    gates = recipe.gates
    out = {f"gate.{task}.max_drop": tolerance for task, tolerance in tolerances.items()}
    out.update({"gate.confidence": gates.confidence, "gate.parity_max_mean_abs_diff": recipe.parity.max_mean_abs_diff,
                "slo.percentile": recipe.slo.percentile, "slo.max_error_rate": recipe.slo.max_error_rate})
    out.update({f"gate.{name}": value for name, value in (("max_kld", gates.max_kld),
                                                          ("max_flip_rate", gates.max_flip_rate)) if value is not None})
    out.update({f"slo.{name}": limit for name, limit in recipe.slo.limits().items()})
    if sequential := recipe.evals.sequential:
        out.update({"gate.sequential_looks": sequential.looks, "gate.sequential_interim_share": sequential.interim_share})
    return out


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
    size = int(result.artifact.manifest["file_bytes"])
    if result.skipped:
        return promote.VariantEvidence(name=result.name, engine=result.engine, is_reference=result.reference, tasks={},
                                       alignment_passed=None, eval_error=None, capacity=measured,
                                       load_error=result.load_error, size_bytes=size, skipped=result.skipped)
    evals = result.evals
    return promote.VariantEvidence(
        name=result.name, engine=result.engine, is_reference=result.reference,
        tasks={label: task_items(evals, label) for label in evals.tasks} if evals else {},
        alignment_passed=evals.alignment.passed if evals else None, eval_error=result.eval_error,
        capacity=measured, load_error=result.load_error, size_bytes=size,
        divergence=asdict(result.divergence) if result.divergence else None, divergence_error=result.divergence_error,
        parity=asdict(result.parity) if result.reference and result.parity else None,
        parity_error=result.parity_error if result.reference else None,
    )


def task_items(evals: EvalResult, label: str) -> promote.TaskItems:
    items = evals.items(label)
    choices = all("choice" in item and "gold" in item for item in items)
    return promote.TaskItems(metric=evals.tasks[label].metric, values=[float(item["value"]) for item in items],
                             doc_ids=[int(item["doc_id"]) for item in items] if all("doc_id" in i for i in items) else None,
                             gold=[int(item["gold"]) for item in items] if choices else None,
                             choice=[int(item["choice"]) for item in items] if choices else None,
                             n_choices=[int(item["n_choices"]) for item in items] if choices else None)
