"""Quantize stage: one backend per variant kind, each behind the small `Quantizer` protocol.

Every artifact lives in its own content-addressed folder with a manifest (what made it, from what,
with which tools, and what it actually holds), so a re-run skips it and a change redoes only it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from pipeline.artifacts import Store
from pipeline.source import SourceResult

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


# variant kind -> factory taking the host's tool-environments root and the recipe
_QUANTIZERS: dict[str, Callable[[Path, Any], Quantizer]] = {}


def manifest_identity(variant: Any, key: str, recipe_hash: str, source: SourceResult) -> dict[str, Any]:
    """The fields every backend's manifest starts with: which variant, made how, from what."""
    return {
        "variant": variant.name,
        "key": key,
        "quantization": variant.quantize_params(),
        "format": variant.format,
        "recipe_hash": recipe_hash,
        "source": {"key": source.key, "sha256": source.source_sha256},
    }


def register(kind: str, factory: Callable[[Path, Any], Quantizer]) -> None:
    _QUANTIZERS[kind] = factory


def quantizer_for(kind: str, envs_root: Path, recipe: Any) -> Quantizer:
    return _QUANTIZERS[kind](envs_root, recipe)
