"""The unquantized model directory itself as a variant (`kind: hf`): the reference on engines that
serve Hugging Face checkpoints. Nothing is computed; the weights are hard-linked, not copied.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

from pipeline import specs
from pipeline.artifacts import Store, content_key, sha256_file
from pipeline.model_info import tensor_shapes
from pipeline.quantize import (STAGE, Artifact, built_artifact, cached_artifact, manifest_identity,
                               write_manifest)
from pipeline.recipe.schema import VariantConfig
from pipeline.source import SourceResult

MODEL_DIR = "model"


class HFVariant(VariantConfig):
    """The unquantized model directory itself: the reference on engines that serve HF checkpoints."""

    format: ClassVar[str] = "hf"
    method: ClassVar[str] = "none"
    kind: Literal["hf"]

    def scheme(self) -> str:
        return "unquantized"

    def weight_bits(self) -> int:
        return 16  # as served: vLLM loads the checkpoint in bf16/fp16


def safetensors_summary(folder: Path) -> dict[str, Any]:
    files = sorted(folder.glob("*.safetensors"))
    digest = hashlib.sha256()
    for f in files:
        digest.update(sha256_file(f).encode())
    return {"file_bytes": sum(f.stat().st_size for f in files), "sha256": digest.hexdigest(),
            "files": [f.name for f in files]}


def safetensors_params(folder: Path) -> int:
    """Number of stored values in a checkpoint, read from the safetensors headers (no tensor loaded)."""
    return sum(math.prod(shape) for shape in tensor_shapes(folder).values())


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link a model directory (no copy of the weights); copy where links are not possible."""
    dst.mkdir(parents=True)
    for item in src.iterdir():
        if item.is_file() and item.suffix in (".json", ".safetensors", ".jinja", ".txt", ".model"):
            try:
                os.link(item, dst / item.name)
            except OSError:
                shutil.copy2(item, dst / item.name)


class PassthroughQuantizer:
    def key(self, variant: HFVariant, source: SourceResult) -> str:
        return content_key("quantize", source.key, variant.quantize_params())

    def quantize(self, variant: HFVariant, source: SourceResult, store: Store, recipe_hash: str) -> Artifact:
        key = self.key(variant, source)
        if found := cached_artifact(store, variant, key, MODEL_DIR):
            return found
        started = time.monotonic()
        with store.building(STAGE, key) as scratch:
            out = scratch / MODEL_DIR
            _link_tree(source.model_dir, out)
            summary = safetensors_summary(out)
            n_params = safetensors_params(out)
            manifest = {
                **manifest_identity(variant, key, recipe_hash, source),
                "tool_versions": {},
                "calibration": None,
                "file": MODEL_DIR,
                **summary,
                "n_params": n_params,
                "bits_per_weight": round(8 * summary["file_bytes"] / n_params, 3) if n_params else None,
                "quantize_seconds": round(time.monotonic() - started, 2),
                "peak_rss_mb": None,
            }
            write_manifest(scratch, manifest)
        return built_artifact(store, variant, key, MODEL_DIR, manifest)


SPEC = specs.register_quantizer(specs.QuantizerSpec(
    name="passthrough", variant_models=(HFVariant,), env=None, make=lambda env, recipe: PassthroughQuantizer(),
    deterministic=True,  # links
))
