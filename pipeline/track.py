"""MLflow recording: a parent run per pipeline run, a child run per variant, and the registry alias.

The parent run is opened when a run starts and marked complete when everything is recorded; a run
that was interrupted (Ctrl-C, SIGTERM, a killed machine, a tracking store that went away) is finished
by running the same command again, into the same parent run (its children are recorded anew).
The registry points at a copy of the winning artifact logged to its child run; re-running with the
same champion adds no version. The champion being replaced keeps a `previous` alias for rollback.
Nothing secret is recorded: params, tags and files are masked (pipeline/secrecy.py).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import yaml
from pydantic import BaseModel

from pipeline import model_card, secrecy
from pipeline.promote import Decision
from pipeline.recipe.schema import Recipe
from pipeline.report import Registry, Report, ReportRow
from pipeline.variant import VariantResult

PREVIOUS_ALIAS = "previous"
PROMOTED_AT = "promoted_at"  # a version tag: when it last became the alias's version
STATE_TAG = "qg_state"  # "incomplete" from the start of a run until everything is recorded
INCOMPLETE, COMPLETE = "incomplete", "complete"


def unavailable_errors() -> tuple[type[BaseException], ...]:
    """What a tracking store that is down or unreachable raises."""
    from mlflow.exceptions import MlflowException

    return (MlflowException, OSError)


def _mlflow():
    import mlflow  # imported lazily: validation and planning never pay for it

    return mlflow


class Tracker:
    def __init__(self, tracking_uri: str, experiment: str, artifact_root: Path):
        mlflow = _mlflow()
        mlflow.set_tracking_uri(tracking_uri)
        self.client = mlflow.MlflowClient(tracking_uri)
        existing = self.client.get_experiment_by_name(experiment)
        if existing is None:
            location = (artifact_root / experiment).resolve().as_uri() if "://" not in str(artifact_root) else None
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        else:
            self.experiment_id = existing.experiment_id
        self.tracking_uri = tracking_uri

    def open_parent(self, name: str, recipe_hash: str, params: dict[str, str], tags: dict[str, str]) -> tuple[str, bool]:
        """(parent run id, resumed): the unfinished parent run of this recipe if an interrupted run
        left one, else a new one."""
        found = self.client.search_runs(
            [self.experiment_id], f"tags.recipe_hash = '{recipe_hash}' and tags.{STATE_TAG} = '{INCOMPLETE}'",
            order_by=["attributes.start_time DESC"], max_results=1)
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            return run_id, True
        from mlflow.entities import Param

        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags=_safe({**tags, "recipe_hash": recipe_hash, STATE_TAG: INCOMPLETE}))
        self.client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in _safe(params).items()])
        return run.info.run_id, False

    def interrupted(self, run_id: str) -> None:
        """Mark a parent run stopped midway (it stays incomplete: the next run resumes it)."""
        self.client.set_terminated(run_id, "KILLED")

    @contextmanager
    def parent_run(self, run_id: str) -> Iterator[str]:
        """Record into the open parent run; its earlier children, from an interrupted attempt, go."""
        mlflow = _mlflow()
        for child in self.client.search_runs([self.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'"):
            self.client.delete_run(child.info.run_id)
        with mlflow.start_run(run_id=run_id) as run:
            yield run.info.run_id
            self.client.set_tag(run_id, STATE_TAG, COMPLETE)

    def child_run(
        self,
        name: str,
        params: dict[str, str],
        metrics: dict[str, float],
        tags: dict[str, str],
        files: dict[str, list[Path]],
        series: dict[str, list[float]] | None = None,
        texts: dict[str, str] | None = None,
    ) -> str:
        """`texts`: artifact file name -> its text (the model card)."""
        mlflow = _mlflow()
        with mlflow.start_run(experiment_id=self.experiment_id, run_name=name, nested=True, tags=_safe(tags)) as run:
            mlflow.log_params(_safe(params))
            finite = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
            mlflow.log_metrics(finite)
            for name, values in (series or {}).items():
                for step, value in enumerate(values):
                    if value is not None and math.isfinite(value):
                        mlflow.log_metric(name, float(value), step=step)
            for folder, paths in files.items():
                for path in paths:
                    if path.is_file():
                        mlflow.log_artifact(str(path), artifact_path=folder)
            for file_name, text in (texts or {}).items():
                mlflow.log_text(secrecy.redact(text), file_name)
            return run.info.run_id

    def log_parent(self, run_id: str, tags: dict[str, str], files: dict[str, Any]) -> None:
        for key, value in _safe(tags).items():
            self.client.set_tag(run_id, key, value)
        with tempfile.TemporaryDirectory() as tmp:
            for name, content in files.items():
                path = Path(tmp) / name
                text = content if isinstance(content, str) else json.dumps(content, indent=2, default=str)
                path.write_text(secrecy.redact(text))
                self.client.log_artifact(run_id, str(path))

    def register(self, model_name: str, alias: str, run_id: str, model_file: Path, manifest: dict[str, Any],
                 card: str = "", figures: dict[str, str] | None = None) -> Registry:
        """Make the winning artifact the alias's version, unless it already is; a new version carries
        the variant's model card as its description and its key figures as tags."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(model_name)
        except MlflowException:
            self.client.create_registered_model(model_name, description="Promoted by quantgate")
        current = None
        try:
            current = self.client.get_model_version_by_alias(model_name, alias)
        except MlflowException:
            pass
        if current is not None and current.tags.get("sha256") == manifest["sha256"]:
            return Registry(name=model_name, version=str(current.version), alias=alias, changed=False, previous_version=None,
                            note=f"version {current.version} already holds this artifact; alias unchanged")
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
            self.client.log_artifact(run_id, str(Path(tmp) / "manifest.json"), artifact_path="model")
        self.client.log_artifact(run_id, str(model_file), artifact_path="model")
        source = f"{self.client.get_run(run_id).info.artifact_uri}/model"
        tags = {"variant": manifest["variant"], "sha256": manifest["sha256"], "artifact_key": manifest["key"],
                "format": manifest["format"], "bits_per_weight": str(manifest.get("bits_per_weight"))}
        version = self.client.create_model_version(model_name, source, run_id=run_id,
                                                   tags=_safe({**tags, **(figures or {})}),
                                                   description=secrecy.redact(card) or None)
        previous = None
        if current is not None:
            self.client.set_registered_model_alias(model_name, PREVIOUS_ALIAS, current.version)
            previous = str(current.version)
        self.client.set_registered_model_alias(model_name, alias, version.version)
        self.client.set_model_version_tag(model_name, version.version, PROMOTED_AT, time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        return Registry(name=model_name, version=str(version.version), alias=alias, changed=True, previous_version=previous,
                        note=f"registered version {version.version} as {alias!r}"
                        + (f"; version {previous} kept as {PREVIOUS_ALIAS!r}" if previous else ""))


def _safe(values: dict[str, str]) -> dict[str, str]:
    """Params or tags as MLflow may keep them: secrets masked, at most 6000 characters (its cap)."""
    masked = {k: secrecy.redact(str(v)) for k, v in values.items()}
    return {k: (v if len(v) <= 6000 else v[:5997] + "...") for k, v in masked.items()}


def open_parent(tracker: Tracker, run_name: str, recipe: Recipe, recipe_path: Path, recipe_hash: str) -> tuple[str, bool]:
    """The run's parent run, opened at its start (or the one an interrupted run left): (id, resumed)."""
    return tracker.open_parent(run_name, recipe_hash, flat_params(recipe.model_dump(mode="json", exclude={"variants"})),
                               {"recipe": str(recipe_path)})


def record(tracker: Tracker, parent: str, recipe: Recipe, report: Report, results: list[VariantResult],
           decision: Decision, charts: dict[str, Path] | None = None) -> Registry | None:
    """A child run per variant, the winner registered, the decision on the `parent` run, which is
    then complete; returns the registry's answer.
    `charts`: variant -> its latency-vs-load PNG, and "" -> the chart across variants (on the parent)."""
    charts = charts or {}
    registry = None
    variants = {v.name: v for v in recipe.variants}
    with tracker.parent_run(parent) as parent_id:
        child_ids = {}
        for result in results:
            row = report.row(result.name)
            child_ids[result.name] = tracker.child_run(
                result.name, flat_params(variants[result.name]), variant_metrics(row, report.metrics),
                {"verdict": "pass" if row.passed else "fail", "promoted": str(row.promoted).lower(),
                 "reasons": "; ".join(row.reasons)[:5000] or "all checks passed",
                 "reference": str(result.reference).lower(), "engine": result.engine},
                _with_chart(result.files(), charts.get(result.name)), load_series(row),
                {"model_card.md": model_card.card(report, row)},
            )
        if decision.winner:
            winner = next(r for r in results if r.name == decision.winner)
            assert winner.artifact is not None
            row = report.row(winner.name)
            registry = tracker.register(recipe.tracking.registered_model, recipe.tracking.alias,
                                        child_ids[winner.name], winner.artifact.model_path, winner.artifact.manifest,
                                        model_card.card(report, row), model_card.key_figures(report, row))
        tracker.log_parent(parent_id, {"winner": decision.winner or "none", "decision": decision.reason},
                           {"decision.json": decision.to_json(),
                            "report.json": {**report.to_json(), "registry": asdict(registry) if registry else None},
                            "recipe.yaml": yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)})
        if "" in charts:
            tracker.client.log_artifact(parent_id, str(charts[""]))
    return registry


def _with_chart(files: dict[str, list[Path]], chart: Path | None) -> dict[str, list[Path]]:
    return {**files, "load": files.get("load", []) + [chart]} if chart else files


def flat_params(obj: Any, prefix: str = "") -> dict[str, str]:
    """Flatten a (nested) recipe section to dotted keys, for MLflow params."""
    data = obj.model_dump(mode="json") if isinstance(obj, BaseModel) else obj
    out: dict[str, str] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(flat_params(value, f"{prefix}{key}."))
    elif isinstance(data, list):
        out[prefix.rstrip(".")] = json.dumps(data)
    else:
        out[prefix.rstrip(".")] = str(data)
    return out


def variant_metrics(row: ReportRow, metric_names: dict[str, str]) -> dict[str, float]:
    metrics: dict[str, float] = {"passed": float(row.passed), "promoted": float(row.promoted)}
    for task, score in row.score.items():
        if score is not None:
            metrics[f"{task}.{metric_names.get(task, 'score')}"] = score
        if row.delta[task] is not None:
            metrics[f"{task}.delta_vs_reference"] = row.delta[task]  # type: ignore[assignment]
        if task in row.delta_upper:
            metrics[f"{task}.drop_upper"] = row.delta_upper[task]
            metrics[f"{task}.right_to_wrong"] = row.flips[task].right_to_wrong
            metrics[f"{task}.wrong_to_right"] = row.flips[task].wrong_to_right
    if row.parity and row.parity.mean_abs_diff is not None:
        metrics["engine_parity_mean_abs_diff"] = row.parity.mean_abs_diff
    if row.divergence:
        for name in ("kld_mean", "kld_p99", "flip_rate", "ppl_ratio", "reference_tail_mass"):
            if (value := getattr(row.divergence, name)) is not None:
                metrics[name] = value
    for name, value in (("size_mb", row.file_mb), ("bits_per_weight", row.bits_per_weight),
                        ("quantize_seconds", row.quantize_seconds), ("quantize_peak_rss_mb", row.peak_rss_mb)):
        if value is not None:
            metrics[name] = value
    capacity = row.capacity
    if capacity and capacity.slo_level:
        metrics["slo_load"] = capacity.slo_level.level
        metrics["slo_goodput_rps"] = capacity.slo_level.goodput_rps
    if capacity and capacity.output_tokens_per_s:
        for name, interval in (("slo_output_tokens_per_s", capacity.output_tokens_per_s),
                               ("slo_requests_per_s", capacity.requests_per_s), ("replicas", capacity.replicas),
                               ("usd_per_1m_tokens", capacity.usd_per_1m_tokens)):
            if interval is None:
                continue
            metrics[name] = interval.estimate
            for side in ("low", "high"):
                if (bound := getattr(interval, side)) is not None:
                    metrics[f"{name}_{side}"] = bound
    if capacity and capacity.accelerators_per_replica:
        metrics["accelerators_per_replica"] = capacity.accelerators_per_replica
    return metrics


def load_series(row: ReportRow) -> dict[str, list[float]]:
    """Per load level, lightest first (MLflow steps): what the latency-vs-load charts plot."""
    series: dict[str, list[float]] = {"load_level": [lv.level for lv in row.load],
                                      "output_tokens_per_s": [lv.output_tokens_per_s.estimate for lv in row.load],
                                      "error_rate": [lv.error_rate for lv in row.load]}
    for metric in ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms"):
        for q in ("p50", "p90", "p95", "p99"):
            values = [lv.latency_ms[metric][q].estimate if metric in lv.latency_ms else math.nan for lv in row.load]
            series[f"{metric.removesuffix('_ms')}_{q}_ms"] = values
    return series
