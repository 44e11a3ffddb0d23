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
import warnings
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml
from pydantic import BaseModel

from pipeline import changes, eval_items, mlflow_keys, model_card, secrecy
from pipeline.promote import Decision
from pipeline.recipe.schema import ENGINE_SETTING, Recipe
from pipeline.report import Registry, Report
from pipeline.variant import VariantResult

PREVIOUS_ALIAS = "previous"
PROMOTED_AT = "promoted_at"  # a version tag: when it last became the alias's version
EXPERIMENT_KIND = "mlflow.experimentKind"
REGISTERED_TAG = "registered_version"  # on a winner's run: "<model>/<version>" that holds its artifact
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
            # a local store keeps files under artifacts/; a tracking server keeps them where it is told
            # (its --artifacts-destination), where every client can reach them
            served = tracking_uri.startswith(("http://", "https://", "databricks"))
            location = (artifact_root / experiment).resolve().as_uri() if not served and "://" not in str(artifact_root) \
                else None
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        else:
            self.experiment_id = existing.experiment_id
        if existing is None or EXPERIMENT_KIND not in existing.tags:
            # MLflow 3's UI shows an experiment of unknown kind as a GenAI one (traces, no runs table)
            self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND, "custom_model_development")
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
        tables: dict[str, dict[str, list[Any]]] | None = None,
        datasets: dict[str, tuple[dict[str, list[Any]], str]] | None = None,
    ) -> str:
        """`texts`: artifact file name -> its text (the model card); `tables`: file name -> columns, for
        MLflow's table view; `datasets`: name -> (columns, where it came from), the eval data."""
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
            for file_name, columns in (tables or {}).items():
                mlflow.log_table(columns, file_name)
            for dataset_name, (columns, source) in (datasets or {}).items():
                import pandas as pd
                from mlflow.data import from_pandas

                # a local path "can be interpreted in multiple ways": it is a file; and integer columns
                # "cannot represent missing values": these have none
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    dataset = from_pandas(pd.DataFrame(columns), source=source, name=dataset_name)
                    mlflow.log_input(dataset, context="eval")
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
                 card: str = "", figures: dict[str, str] | None = None, variant: str | None = None,
                 kv_cache: str | None = None) -> Registry:
        """Make the winning artifact, served with its KV cache type, the alias's version, unless it
        already is; a new version carries the variant's model card as its description and its key
        figures as tags."""
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
        serving = {"kv_cache": kv_cache or ENGINE_SETTING}  # what `quantgate serve` applies to the engine's section
        if current is not None and current.tags.get("sha256") == manifest["sha256"] \
                and current.tags.get("kv_cache", ENGINE_SETTING) == serving["kv_cache"]:
            # the version links to the run that first registered it; this run's winner says which it is
            self.client.set_tag(run_id, REGISTERED_TAG, f"{model_name}/{current.version}")
            return Registry(name=model_name, version=str(current.version), alias=alias, changed=False, previous_version=None,
                            note=f"version {current.version} already holds this artifact; alias unchanged")
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
            self.client.log_artifact(run_id, str(Path(tmp) / "manifest.json"), artifact_path="model")
        self.client.log_artifact(run_id, str(model_file), artifact_path="model")
        source = f"{self.client.get_run(run_id).info.artifact_uri}/model"
        tags = {"variant": variant or manifest["variant"], "sha256": manifest["sha256"], "artifact_key": manifest["key"],
                "format": manifest["format"], "bits_per_weight": str(manifest.get("bits_per_weight")), **serving}
        version = self.client.create_model_version(model_name, source, run_id=run_id,
                                                   tags=_safe({**tags, **(figures or {})}),
                                                   description=secrecy.redact(card) or None)
        previous = None
        if current is not None:
            self.client.set_registered_model_alias(model_name, PREVIOUS_ALIAS, current.version)
            previous = str(current.version)
        self.client.set_registered_model_alias(model_name, alias, version.version)
        self.client.set_model_version_tag(model_name, version.version, PROMOTED_AT, time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        self.client.set_tag(run_id, REGISTERED_TAG, f"{model_name}/{version.version}")
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
                               {"recipe": str(recipe_path), "recipe_name": recipe.name, **run_facts()})


def run_facts() -> dict[str, str]:
    """Where the run ran: quantgate's commit and version, the host's CPU class, cores and memory."""
    import os
    import platform
    import subprocess
    from importlib import metadata

    from pipeline import compat
    from pipeline.settings import REPO_ROOT

    commit = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"git_commit": commit.stdout.strip() if commit.returncode == 0 else "unknown",
            "quantgate_version": metadata.version("quantgate"),
            "host": f"{platform.machine()} {compat.cpu_class()}, {os.cpu_count()} cores, {memory:.0f} GiB"}


def since_last(tracker: Tracker, recipe_name: str, parent: str, facts: dict[str, str], report: Report
               ) -> tuple[str | None, list[str]]:
    """(the last complete run of this recipe, what changed since it); (None, []) for the first."""
    previous = changes.previous_run(tracker.client, tracker.experiment_id, recipe_name, parent)
    if previous is None:
        return None, []
    return previous.info.run_name, changes.since(previous.data.tags, changes.verdicts(tracker.client, previous),
                                                 facts, report)


def record(tracker: Tracker, parent: str, recipe: Recipe, report: Report, results: list[VariantResult],
           decision: Decision, charts: dict[str, Path] | None = None,
           documents: Callable[[Registry | None, str], list[Path]] | None = None,
           facts: dict[str, str] | None = None) -> Registry | None:
    """A child run per variant, the winner registered, the decision on the `parent` run, which is
    then complete; returns the registry's answer.
    `charts`: variant -> its latency-vs-load PNG, and "" -> the chart across variants (on the parent);
    `documents`: writes the report for people, given the registry's answer and the parent run."""
    charts = charts or {}
    registry = None
    variants = {v.name: v for v in recipe.variants}
    with tracker.parent_run(parent) as parent_id:
        child_ids = {}
        references = {r.engine: r for r in results if r.reference}
        for result in results:
            row = report.row(result.name)
            variant = variants[result.name]
            child_ids[result.name] = tracker.child_run(
                result.name, {**flat_params(variant), **mlflow_keys.params(report)}, mlflow_keys.metrics(row),
                mlflow_keys.tags(row, variant.labels()), _with_chart(result.files(), charts.get(result.name)),
                mlflow_keys.series(row), {"model_card.md": model_card.card(report, row)},
                *_eval_tables(result, references.get(result.engine), report.tasks))
        if decision.winner:
            winner = next(r for r in results if r.name == decision.winner)
            assert winner.artifact is not None
            row = report.row(winner.name)
            registry = tracker.register(recipe.tracking.registered_model, recipe.tracking.alias,
                                        child_ids[winner.name], winner.artifact.model_path, winner.artifact.manifest,
                                        model_card.card(report, row), model_card.key_figures(report, row),
                                        winner.name, variants[winner.name].kv_cache)
        tracker.log_parent(parent_id, {"winner": decision.winner or "none", "decision": decision.reason, **(facts or {})},
                           {"decision.json": decision.to_json(),
                            "report.json": {**report.to_json(), "registry": asdict(registry) if registry else None},
                            "recipe.yaml": yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)})
        if "" in charts:
            tracker.client.log_artifact(parent_id, str(charts[""]))
        for path in documents(registry, parent_id) if documents else []:
            tracker.client.log_artifact(parent_id, str(path), "report")
    return registry


def _eval_tables(result: VariantResult, reference: VariantResult | None, tasks: list[str]
                 ) -> tuple[dict[str, dict[str, list[Any]]], dict[str, tuple[dict[str, list[Any]], str]]]:
    """The items this variant answered unlike its reference (a table), and each task's items (datasets)."""
    if result.evals is None:
        return {}, {}
    datasets = {task: (eval_items.dataset(result.evals, task), str(result.evals.folder / result.evals.tasks[task].samples_file))
                for task in tasks if task in result.evals.tasks}
    if reference is None or reference.evals is None or reference is result:
        return {}, datasets
    return {"flipped_items.json": eval_items.flipped(reference.evals, result.evals, tasks)}, datasets


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
