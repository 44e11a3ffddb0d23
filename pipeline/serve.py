"""`quantgate serve MODEL[@ALIAS]`: a registered version served as it was measured, for any OpenAI
client: the engine its run used, that engine's settings from the run's recipe, on 127.0.0.1 with a
fresh API key.

The artifact comes from this host's artifacts store when it holds that entry (checked against its
checksums), else from the registry (the copy logged to the version's run), checked against the
version's sha256.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline import specs
from pipeline.artifacts import Store, read_json
from pipeline.quantize import MANIFEST, STAGE, Artifact
from pipeline.recipe.schema import ENGINE_SETTING
from pipeline.registry import RegistryError, require_model

DEFAULT_ALIAS = "champion"
TARGET = re.compile(r"^(?P<model>[A-Za-z0-9][A-Za-z0-9_.-]*)(@(?P<alias>[a-z][a-z0-9_-]*))?$")


@dataclass(frozen=True)
class ServePlan:
    """What `serve` resolved from the registry: the version, the engine and settings it was measured
    with, and the artifact on this host."""

    model: str
    alias: str
    version: str
    engine: str
    config: Any  # the engine's recipe section as the measuring run had it
    artifact: Artifact
    from_registry: bool  # downloaded from the registry, not found in this host's store


def parse_target(target: str) -> tuple[str, str]:
    """'name' or 'name@alias' -> (name, alias)."""
    match = TARGET.match(target)
    if not match:
        raise RegistryError(f"MODEL: {target!r} is not NAME or NAME@ALIAS (e.g. smollm2-135m-demo@champion)")
    return match["model"], match["alias"] or DEFAULT_ALIAS


def resolve(client: Any, target: str, store: Store) -> ServePlan:
    from mlflow.exceptions import MlflowException

    model, alias = parse_target(target)
    require_model(client, model)
    try:
        version = client.get_model_version_by_alias(model, alias)
    except MlflowException:
        raise RegistryError(f"{model} has no {alias!r} version (no run has promoted one, or the alias is misspelt)"
                            ) from None
    run = client.get_run(version.run_id)
    engine = run.data.tags.get("engine")
    parent = run.data.tags.get("mlflow.parentRunId")
    if not engine or not parent:
        raise RegistryError(f"{model} version {version.version} was not registered by quantgate (its run has no"
                            " engine or parent run): serve it with its own tools")
    spec = specs.engine(engine)
    with tempfile.TemporaryDirectory() as tmp:
        recipe = yaml.safe_load(Path(client.download_artifacts(parent, "recipe.yaml", tmp)).read_text())
    config = spec.config_model.model_validate((recipe.get("engines") or {}).get(engine) or {})
    if (kv_cache := version.tags.get("kv_cache", ENGINE_SETTING)) != ENGINE_SETTING:
        if kv_cache not in config.kv_cache_types():
            raise RegistryError(f"{model} version {version.version} was measured with KV cache {kv_cache!r}, which"
                                f" this quantgate's {engine} does not know ({', '.join(config.kv_cache_types())})")
        config = config.with_kv_cache(kv_cache)
    artifact, downloaded = _artifact(client, version, store)
    return ServePlan(model, alias, str(version.version), engine, config, artifact, downloaded)


def _artifact(client: Any, version: Any, store: Store) -> tuple[Artifact, bool]:
    key, sha = version.tags.get("artifact_key"), version.tags.get("sha256")
    if key and store.has(STAGE, key):
        entry = store.entry(STAGE, key)
        manifest = read_json(entry / MANIFEST)
        if manifest.get("sha256") == sha:
            return Artifact(manifest["variant"], key, entry, entry / manifest["file"], manifest, cached=True), False
    import mlflow

    folder = store.root / "serve" / f"{version.name}-v{version.version}-{str(sha)[:12]}"
    if not any(folder.rglob(MANIFEST)):  # downloaded whole, or not at all
        folder.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(scratch),
                                                tracking_uri=client.tracking_uri)
            shutil.rmtree(folder, ignore_errors=True)
            scratch.rename(folder)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
    model_dir = next((p.parent for p in folder.rglob(MANIFEST)), folder)
    manifest = read_json(model_dir / MANIFEST)
    if manifest.get("sha256") != sha:
        raise RegistryError(f"{version.name} version {version.version}: the registry's copy has sha256"
                            f" {str(manifest.get('sha256'))[:12]}, the version says {str(sha)[:12]}")
    model_path = model_dir / Path(manifest["file"]).name
    return Artifact(manifest["variant"], manifest["key"], model_dir, model_path, manifest, cached=True), True

