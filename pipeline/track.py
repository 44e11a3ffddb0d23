"""MLflow recording: a parent run per pipeline run, a child run per variant, and the registry alias.

The registry points at a copy of the winning artifact logged to its child run; re-running with the
same champion adds no version. The champion being replaced keeps a `previous` alias for rollback.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from contextlib import contextmanager

PREVIOUS_ALIAS = "previous"


@dataclass(frozen=True)
class RegistryOutcome:
    name: str
    version: str | None
    alias: str
    changed: bool
    previous_version: str | None
    note: str


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

    @contextmanager
    def parent_run(self, name: str, params: dict[str, str], tags: dict[str, str]) -> Iterator[str]:
        mlflow = _mlflow()
        with mlflow.start_run(experiment_id=self.experiment_id, run_name=name, tags=tags) as run:
            mlflow.log_params(_clip(params))
            yield run.info.run_id

    def child_run(
        self,
        name: str,
        params: dict[str, str],
        metrics: dict[str, float],
        tags: dict[str, str],
        files: dict[str, list[Path]],
    ) -> str:
        mlflow = _mlflow()
        with mlflow.start_run(experiment_id=self.experiment_id, run_name=name, nested=True, tags=tags) as run:
            mlflow.log_params(_clip(params))
            finite = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
            mlflow.log_metrics(finite)
            for folder, paths in files.items():
                for path in paths:
                    if path.is_file():
                        mlflow.log_artifact(str(path), artifact_path=folder)
            return run.info.run_id

    def log_parent(self, run_id: str, tags: dict[str, str], files: dict[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value)
        with tempfile.TemporaryDirectory() as tmp:
            for name, content in files.items():
                path = Path(tmp) / name
                path.write_text(content if isinstance(content, str) else json.dumps(content, indent=2, default=str))
                self.client.log_artifact(run_id, str(path))

    def register(self, model_name: str, alias: str, run_id: str, model_file: Path, manifest: dict[str, Any]) -> RegistryOutcome:
        """Make the winning artifact the alias's version, unless it already is."""
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
            return RegistryOutcome(model_name, current.version, alias, False, None,
                                   f"version {current.version} already holds this artifact; alias unchanged")
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
            self.client.log_artifact(run_id, str(Path(tmp) / "manifest.json"), artifact_path="model")
        self.client.log_artifact(run_id, str(model_file), artifact_path="model")
        source = f"{self.client.get_run(run_id).info.artifact_uri}/model"
        tags = {"variant": manifest["variant"], "sha256": manifest["sha256"], "artifact_key": manifest["key"],
                "format": manifest["format"], "bits_per_weight": str(manifest.get("bits_per_weight"))}
        version = self.client.create_model_version(model_name, source, run_id=run_id, tags=tags)
        previous = None
        if current is not None:
            self.client.set_registered_model_alias(model_name, PREVIOUS_ALIAS, current.version)
            previous = current.version
        self.client.set_registered_model_alias(model_name, alias, version.version)
        return RegistryOutcome(model_name, version.version, alias, True, previous,
                               f"registered version {version.version} as {alias!r}"
                               + (f"; version {previous} kept as {PREVIOUS_ALIAS!r}" if previous else ""))


def _clip(params: dict[str, str]) -> dict[str, str]:
    # MLflow caps a param value at 6000 characters.
    return {k: (v if len(v) <= 6000 else v[:5997] + "...") for k, v in params.items()}
