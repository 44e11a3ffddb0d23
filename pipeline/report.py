"""The run's report: one typed object, one row per variant, that the terminal table, the MLflow
recorder and the report file all read (`artifacts/reports/<run>.json` is `Report.to_json()`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from pipeline.artifacts import write_json
from pipeline.capacity import Capacity
from pipeline.measure.latency import LevelSummary, by_level, summarize
from pipeline.measure.parity import ParityResult
from pipeline.promote import Decision
from pipeline.variant import VariantResult
from pipeline.workers.handoff import from_plain, to_plain
from pipeline.workers.messages import DivergenceMetrics


@dataclass(frozen=True, kw_only=True)
class TaskFlips:
    right_to_wrong: int
    wrong_to_right: int
    mcnemar_p: float


@dataclass(frozen=True, kw_only=True)
class Registry:
    """What the promotion did to the model registry."""

    name: str
    version: str | None
    alias: str
    changed: bool
    previous_version: str | None
    note: str


@dataclass(frozen=True, kw_only=True)
class ReportRow:
    variant: str
    engine: str
    reference: bool
    quantization: dict[str, Any] | None
    kv_cache: str | None = None  # the KV cache type it was served with (None: the engine section's)
    file_mb: float | None
    bits_per_weight: float | None
    artifact_key: str | None
    quantize_seconds: float | None
    peak_rss_mb: float | None
    score: dict[str, float | None]  # per task, its metric's mean
    delta: dict[str, float | None]  # score vs the engine's reference
    delta_upper: dict[str, float]  # one-sided upper confidence bound on the drop
    flips: dict[str, TaskFlips]
    uninformative: dict[str, str]  # tasks that cannot tell variants apart here: why (never gated on)
    divergence: DivergenceMetrics | None
    parity: ParityResult | None  # references only
    load: list[LevelSummary]  # every load level, lightest first (empty: not measured)
    capacity: Capacity | None  # the SLO verdict per level, the SLO load, replicas and cost with intervals
    usd_per_1m_tokens: float | None
    passed: bool
    promoted: bool
    reasons: list[str]
    items: dict[str, int] = field(default_factory=dict)  # per task, the items scored
    stopped: dict[str, str] = field(default_factory=dict)  # sequential evaluation: per task, where and why it stopped
    skipped: str | None = None  # cheapest-first search priced it only: why its quality was not measured

    @property
    def verdict(self) -> str:
        """One word for tables and tags: promoted, pass, skipped (not evaluated) or fail."""
        return "promoted" if self.promoted else "pass" if self.passed else "skipped" if self.skipped else "fail"

    def worst_drop_bound(self) -> float | None:
        """The largest upper bound on a task's drop vs the reference (0 for the reference itself)."""
        if self.delta_upper:
            return max(self.delta_upper.values())
        return 0.0 if self.reference else None


@dataclass(frozen=True, kw_only=True)
class Report:
    recipe: str
    recipe_hash: str
    tasks: list[str]
    metrics: dict[str, str]  # task -> the per-item metric its gate reads
    winner: str | None
    decision: str
    rows: list[ReportRow]
    tied: list[str]  # passing variants the winner could not be told from by cost (empty: no tie)
    thresholds: dict[str, float] = field(default_factory=dict)  # gate.* and slo.*: what verdicts were judged by
    previous_run: str | None = None  # the last complete run of this recipe (by name) in the experiment
    changes: list[str] | None = None  # what changed since it (None: not compared)
    registry: Registry | None = None
    mlflow_parent_run: str | None = None
    tracking_uri: str | None = None
    inputs: str | None = None  # fingerprint of the recipe, content keys and code it follows from (run.py)
    broken: list[str] = field(default_factory=list)  # why its decision rests on failures (run.broken)

    def row(self, variant: str) -> ReportRow:
        return next(r for r in self.rows if r.variant == variant)

    def pareto_frontier(self) -> list[str]:
        """Variants no other variant beats on both cost ($/1M tokens) and quality (the worst drop
        bound), cheapest first: the only ones worth choosing among."""
        priced = sorted((row for row in self.rows if row.usd_per_1m_tokens is not None
                         and row.worst_drop_bound() is not None),
                        key=lambda row: (row.usd_per_1m_tokens, row.worst_drop_bound()))
        frontier, best = [], float("inf")
        for row in priced:
            if row.worst_drop_bound() < best:  # type: ignore[operator]
                frontier.append(row.variant)
                best = row.worst_drop_bound()  # type: ignore[assignment]
        return frontier

    def to_json(self) -> dict[str, Any]:
        return to_plain(self)

    def save(self, path: Path) -> None:
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> "Report":
        return from_plain(json.loads(path.read_text()), cls)

    def with_changes(self, previous_run: str | None, changes: list[str] | None) -> "Report":
        return replace(self, previous_run=previous_run, changes=changes)

    def with_tracking(self, registry: Registry | None, parent_run: str, tracking_uri: str) -> "Report":
        return replace(self, registry=registry, mlflow_parent_run=parent_run, tracking_uri=tracking_uri)


def build(recipe_name: str, recipe_hash: str, tasks: list[str], results: list[VariantResult],
          capacities: dict[str, Capacity | None], decision: Decision, level_name: Callable[[float], str],
          slo_percentile: float, thresholds: dict[str, float] | None = None, inputs: str | None = None,
          broken: list[str] | None = None) -> Report:
    """One row per variant with the figures the summary table and MLflow show."""
    references = {r.engine: r for r in results if r.reference}
    metrics: dict[str, str] = {}
    rows = []
    for result in results:
        verdict = decision.verdict(result.name)
        manifest = result.artifact.manifest if result.artifact else {}
        reference = references.get(result.engine)
        score, delta, delta_upper, flips = {}, {}, {}, {}
        for task in tasks:
            ours = _score(result, task)
            ref = _score(reference, task) if reference else None
            score[task] = ours
            delta[task] = round(ours - ref, 4) if ours is not None and ref is not None else None
            if result.evals and task in result.evals.tasks:
                metrics[task] = result.evals.tasks[task].metric
            if c := verdict.comparisons.get(task):
                delta_upper[task] = round(c.drop_upper, 4)
                if c.n != _items(reference, task):  # stopped early: the delta on the items both scored
                    delta[task] = round(-c.drop, 4)
                if c.right_to_wrong is not None and c.wrong_to_right is not None and c.mcnemar_p is not None:
                    flips[task] = TaskFlips(right_to_wrong=c.right_to_wrong, wrong_to_right=c.wrong_to_right,
                                            mcnemar_p=round(c.mcnemar_p, 5))
        rows.append(ReportRow(
            variant=result.name, engine=result.engine, reference=result.reference,
            quantization=manifest.get("quantization"), kv_cache=result.kv_cache,
            file_mb=round(manifest["file_bytes"] / 1e6, 1) if manifest else None,
            bits_per_weight=manifest.get("bits_per_weight"), artifact_key=manifest.get("key"),
            quantize_seconds=manifest.get("quantize_seconds"), peak_rss_mb=manifest.get("peak_rss_mb"),
            score=score, delta=delta, delta_upper=delta_upper, flips=flips,
            uninformative={t: i.reason for t, i in verdict.informative.items() if not i.informative},
            divergence=result.divergence, parity=result.parity if result.reference else None,
            load=[summarize(rounds, level_name(rounds[0].level), slo_percentile=slo_percentile)
                  for rounds in by_level(result.load.levels)]
            if result.load else [],
            capacity=capacities.get(result.name),
            usd_per_1m_tokens=verdict.usd_per_1m_tokens, passed=verdict.passed, promoted=verdict.promoted,
            reasons=verdict.reasons,
            items={task: score.n for task, score in result.evals.tasks.items()} if result.evals else {},
            stopped={task: score.stopped for task, score in result.evals.tasks.items() if score.stopped}
            if result.evals else {},
            skipped=result.skipped,
        ))
    return Report(recipe=recipe_name, recipe_hash=recipe_hash, tasks=list(tasks), metrics=metrics,
                  winner=decision.winner, decision=decision.reason, rows=rows, tied=decision.tied,
                  thresholds=thresholds or {}, inputs=inputs, broken=list(broken or []))


def _items(result: VariantResult | None, task: str) -> int | None:
    return result.evals.tasks[task].n if result and result.evals and task in result.evals.tasks else None


def _score(result: VariantResult, task: str) -> float | None:
    return result.evals.tasks[task].value if result.evals and task in result.evals.tasks else None
