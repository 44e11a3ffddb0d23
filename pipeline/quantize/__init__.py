"""Quantize stage: one backend per module here, each behind the small `Quantizer` protocol and
registered with a `QuantizerSpec` (pipeline/specs.py) naming the variant kinds it makes.

Every artifact lives in its own content-addressed folder with a manifest (what made it, from what,
with which tools, and what it actually holds), so a re-run skips it and a change redoes only it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pipeline import specs
from pipeline.artifacts import RESULT_FILE, Store, write_json
from pipeline.source import SourceResult
from pipeline.toolenv import tool_env

STAGE = "variants"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Artifact:
    variant: str
    key: str
    folder: Path
    model_path: Path  # what the engine loads: a .gguf file or a model directory
    manifest: dict[str, Any]
    cached: bool


class Quantizer(Protocol):
    """Turns the materialised source model into one variant's artifact."""

    def key(self, variant: Any, source: SourceResult) -> str: ...

    def quantize(self, variant: Any, source: SourceResult, store: Store, recipe_hash: str) -> Artifact: ...


def manifest_identity(variant: Any, key: str, recipe_hash: str, source: SourceResult) -> dict[str, Any]:
    """The fields every backend's manifest starts with: which variant, made how, from what."""
    return {
        "variant": variant.name,
        "key": key,
        "quantization": variant.quantize_params(),
        "format": variant.format,
        "recipe_hash": recipe_hash,
        "source": {"key": source.key, "sha256": source.source_sha256},
        "deterministic": specs.quantizer_for_kind(variant.kind).deterministic,
    }


def cached_artifact(store: Store, variant: Any, key: str, file: str) -> Artifact | None:
    """The finished artifact under `key`, or None: what every backend checks before any work."""
    if not store.has(STAGE, key):
        return None
    entry = store.entry(STAGE, key)
    return Artifact(variant.name, key, entry, entry / file, store.result(STAGE, key), cached=True)


def write_manifest(scratch: Path, manifest: dict[str, Any]) -> None:
    """The last write of a backend's build: the manifest, which is also the entry's result."""
    write_json(scratch / MANIFEST, manifest)
    write_json(scratch / RESULT_FILE, manifest)


def built_artifact(store: Store, variant: Any, key: str, file: str, manifest: dict[str, Any]) -> Artifact:
    entry = store.entry(STAGE, key)
    return Artifact(variant.name, key, entry, entry / file, manifest, cached=False)


def quantizer_for(kind: str, envs_root: Path, recipe: Any) -> Quantizer:
    """The backend that makes `kind`, in its tool environment."""
    spec = specs.quantizer_for_kind(kind)
    return spec.make(tool_env(spec.env, envs_root) if spec.env else None, recipe)
