"""Bring your own artifact: a GGUF file made elsewhere (a community quantization, another tool's run)
as a variant, served by llama.cpp and gated against the recipe model's llama.cpp reference like a
variant made here.

Its type is read from the file's own metadata (`general.file_type`) and its tensors from the file
(what every tensor holds, effective bits per weight), so the manifest describes what was imported,
not what its name claims. The file is linked (or copied) into the store under a key of its sha256.
"""

from __future__ import annotations

import functools
import re
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

from pipeline import specs
from pipeline.artifacts import Store, content_key, sha256_file
from pipeline.model_info import gguf_file_type
from pipeline.quantize import STAGE, Artifact, built_artifact, cached_artifact, write_manifest
from pipeline.quantize.gguf import MODEL_FILE, gguf_manifest, link_or_copy, tool_versions
from pipeline.recipe.schema import VariantConfig
from pipeline.source import SourceResult
from pipeline.toolenv import ToolEnv
from pipeline.workers.messages import GGUFInspectRequest


class GGUFFileVariant(VariantConfig):
    """An existing GGUF file (`path`, relative to the recipe), measured and gated as it is."""

    format: ClassVar[str] = "gguf"
    method: ClassVar[str] = "imported"
    path_fields: ClassVar[tuple[str, ...]] = ("path",)

    kind: Literal["gguf_file"]
    path: Path

    def scheme(self) -> str:
        return gguf_file_type(self.path)

    def weight_bits(self) -> int:
        digits = re.search(r"\d+", self.scheme())
        return int(digits.group()) if digits else 0

    def check_files(self) -> str | None:
        try:
            gguf_file_type(self.path)
        except (ValueError, OSError) as exc:
            return f"{self.path} cannot be imported: {exc}"
        return None


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file, once per version of it in this process (plans ask for keys more than once)."""
    return sha256_file(Path(path))


def file_sha256(path: Path) -> str:
    stat = path.stat()
    return _file_sha256(str(path), stat.st_size, stat.st_mtime_ns)


class GGUFImporter:
    def __init__(self, env: ToolEnv, timeout_s: float):
        self.env = env
        self.timeout_s = timeout_s

    def key(self, variant: GGUFFileVariant, source: SourceResult) -> str:
        return content_key("import", source.key, {"kind": variant.kind, "sha256": file_sha256(variant.path)},
                           tool_versions(self.env))

    def quantize(self, variant: GGUFFileVariant, source: SourceResult, store: Store, recipe_hash: str) -> Artifact:
        key = self.key(variant, source)
        if found := cached_artifact(store, variant, key, MODEL_FILE):
            return found
        started = time.monotonic()
        with store.building(STAGE, key) as scratch:
            out = scratch / MODEL_FILE
            link_or_copy(variant.path, out)
            details = self.env.run_worker("pipeline.workers.gguf", GGUFInspectRequest(path=str(out)), scratch,
                                          "inspect.log", timeout_s=self.timeout_s)
            manifest: dict[str, Any] = {**gguf_manifest(variant, key, recipe_hash, source, self.env, out, details,
                                                        started),
                                        "imported_from": str(variant.path), "file_type": gguf_file_type(out)}
            write_manifest(scratch, manifest)
        return built_artifact(store, variant, key, MODEL_FILE, manifest)


SPEC = specs.register_quantizer(specs.QuantizerSpec(
    name="import-gguf", variant_models=(GGUFFileVariant,), env="llamacpp",
    make=lambda env, recipe: GGUFImporter(env, recipe.timeouts.quantize), deterministic=True,  # a copy
))
