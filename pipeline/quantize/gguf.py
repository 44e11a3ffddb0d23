"""GGUF backend: HF dir -> F16 GGUF (convert_hf_to_gguf.py) -> the variant's type (llama-quantize),
optionally weighted by an importance matrix (llama-imatrix on the recipe's calibration texts).

The F16 conversion is shared by every quantized type of a source, and the importance matrix by every
type that asks for one; each is cached on its own key.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from pipeline import specs
from pipeline.artifacts import RESULT_FILE, Store, content_key, sha256_file, write_json
from pipeline.quantize import (STAGE, Artifact, built_artifact, cached_artifact, manifest_identity,
                               write_manifest)
from pipeline.quantize.calibration import calibration_data, calibration_fingerprint
from pipeline.recipe.schema import CalibrationConfig, VariantConfig
from pipeline.source import SourceResult
from pipeline.toolenv import ToolEnv, llama_cpp_src, llamacpp_binary, llamacpp_version
from pipeline.workers.messages import (GGUFConvertRequest, GGUFFile, GGUFImatrixRequest, GGUFInspectRequest,
                                       GGUFQuantizeRequest, ImatrixResult)

BASE_STAGE = "gguf-base"
IMATRIX_STAGE = "imatrix"
MODEL_FILE = "model.gguf"
IMATRIX_FILE = "imatrix.gguf"

# llama.cpp file types accepted by llama-quantize (and the unquantized conversions convert_hf_to_gguf
# writes). Effective bits per weight are measured per artifact: k-quants fall back on tensors whose
# width is not a multiple of 256.
GGUF_UNQUANTIZED = ("F32", "F16", "BF16")
GGUF_TYPES = GGUF_UNQUANTIZED + ("Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_1", "Q5_0", "Q4_K_M", "Q4_K_S", "Q4_1",
                                 "Q4_0", "Q3_K_L", "Q3_K_M", "Q3_K_S", "Q2_K")
# llama-quantize rounds these to the importance matrix when given one (Q8_0 and the unquantized
# conversions ignore it)
IMATRIX_TYPES = tuple(t for t in GGUF_TYPES if t not in GGUF_UNQUANTIZED + ("Q8_0",))


class GGUFVariant(VariantConfig):
    """A llama.cpp GGUF type; F16/BF16/F32 are unquantized conversions (the reference)."""

    format: ClassVar[str] = "gguf"
    method: ClassVar[str] = "llama.cpp"
    kind: Literal["gguf"]
    type: str
    imatrix: bool = Field(False, description="weight the rounding by an importance matrix that llama-imatrix"
                                             " computes on the recipe's calibration texts (shared by the types"
                                             " that ask for it)")

    def scheme(self) -> str:
        return self.type + ("+imatrix" if self.imatrix else "")

    def uses_calibration(self) -> bool:
        return self.imatrix

    def quantize_params(self) -> dict[str, Any]:
        """Without an importance matrix, as before the option existed (the same keys)."""
        params = super().quantize_params()
        if not self.imatrix:
            del params["imatrix"]
        return params

    @model_validator(mode="after")
    def _imatrix_applies(self) -> "GGUFVariant":
        if self.imatrix and self.type not in IMATRIX_TYPES:
            raise ValueError(f"imatrix: {self.type} does not use an importance matrix (types that do:"
                             f" {', '.join(IMATRIX_TYPES)})")
        return self

    def weight_bits(self) -> int:
        """F16 -> 16, Q4_K_M -> 4: the digits of the type's name."""
        return int(re.search(r"\d+", self.type).group())  # type: ignore[union-attr]

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in GGUF_TYPES:
            raise ValueError(specs.unknown("GGUF type", value, list(GGUF_TYPES)))
        return value


def tool_versions(env: ToolEnv) -> dict[str, str]:
    return {"llama-cpp-python": llamacpp_version(env), "llama.cpp": "vendored"}


class GGUFQuantizer:
    def __init__(self, env: ToolEnv, timeout_s: float, calibration: CalibrationConfig | None = None,
                 threads: int = 2):
        self.env = env
        self.timeout_s = timeout_s  # each tool call
        self.calibration = calibration or CalibrationConfig()
        self.threads = threads

    def key(self, variant: GGUFVariant, source: SourceResult) -> str:
        parts: list[Any] = ["quantize", source.key, variant.quantize_params(), tool_versions(self.env)]
        if variant.imatrix:
            parts.append(self._imatrix_key(source))
        return content_key(*parts)

    def _base_key(self, source: SourceResult, outtype: str) -> str:
        return content_key(BASE_STAGE, source.key, outtype, tool_versions(self.env))

    def _imatrix_key(self, source: SourceResult) -> str:
        return content_key(IMATRIX_STAGE, self._base_key(source, "F16"), calibration_fingerprint(self.calibration),
                           tool_versions(self.env))

    def _imatrix(self, source: SourceResult, store: Store, base: Path) -> dict[str, Any]:
        """The importance matrix on the F16 conversion (made once, shared): its file and what made it."""
        key = self._imatrix_key(source)
        with store.lock(IMATRIX_STAGE, key):
            if not store.has(IMATRIX_STAGE, key):
                with store.building(IMATRIX_STAGE, key) as scratch:
                    details: ImatrixResult = self.env.run_worker("pipeline.workers.gguf", GGUFImatrixRequest(
                        llama_imatrix=str(llamacpp_binary(self.env, "llama-imatrix")), base=str(base),
                        out=str(scratch / IMATRIX_FILE), calibration=calibration_data(self.calibration),
                        threads=self.threads), scratch, "imatrix.log", timeout_s=self.timeout_s)
                    write_json(scratch / RESULT_FILE, {
                        "key": key, "file": IMATRIX_FILE, "sha256": sha256_file(scratch / IMATRIX_FILE),
                        "calibration": {**calibration_fingerprint(self.calibration),
                                        "samples_sha256": details.calibration_sha256},
                        "chunks": details.chunks, "seconds": details.seconds, "peak_rss_mb": details.peak_rss_mb})
        return store.result(IMATRIX_STAGE, key)

    def _convert(self, source: SourceResult, store: Store, outtype: str) -> Path:
        key = self._base_key(source, outtype)
        with store.lock(BASE_STAGE, key):
            if not store.has(BASE_STAGE, key):
                with store.building(BASE_STAGE, key) as scratch:
                    details = self.env.run_worker("pipeline.workers.gguf", GGUFConvertRequest(
                        llama_cpp_src=str(llama_cpp_src(self.env)), model_dir=str(source.model_dir),
                        out=str(scratch / MODEL_FILE), outtype=outtype), scratch, "convert.log",
                        timeout_s=self.timeout_s)
                    write_json(scratch / RESULT_FILE, {"seconds": details.seconds})
        return store.entry(BASE_STAGE, key) / MODEL_FILE

    def quantize(self, variant: GGUFVariant, source: SourceResult, store: Store, recipe_hash: str) -> Artifact:
        key = self.key(variant, source)
        if found := cached_artifact(store, variant, key, MODEL_FILE):
            return found
        started = time.monotonic()
        base = self._convert(source, store, "F16" if variant.type not in GGUF_UNQUANTIZED else variant.type)
        with store.building(STAGE, key) as scratch:
            out = scratch / MODEL_FILE
            details: GGUFFile
            if variant.type in GGUF_UNQUANTIZED:
                link_or_copy(base, out)  # the conversion itself is the artifact
                details = self.env.run_worker("pipeline.workers.gguf", GGUFInspectRequest(path=str(out)),
                                              scratch, "inspect.log", timeout_s=self.timeout_s)
            else:
                imatrix = self._imatrix(source, store, base) if variant.imatrix else None
                details = self.env.run_worker("pipeline.workers.gguf", GGUFQuantizeRequest(
                    llama_quantize=str(llamacpp_binary(self.env, "llama-quantize")), base=str(base), out=str(out),
                    type=variant.type, threads=self.threads,
                    imatrix=str(store.entry(IMATRIX_STAGE, imatrix["key"]) / IMATRIX_FILE) if imatrix else None),
                    scratch, "quantize.log", timeout_s=self.timeout_s)
            manifest = gguf_manifest(variant, key, recipe_hash, source, self.env, out, details, started)
            if variant.imatrix:
                manifest["imatrix"] = imatrix
            write_manifest(scratch, manifest)
        return built_artifact(store, variant, key, MODEL_FILE, manifest)


def gguf_manifest(variant: Any, key: str, recipe_hash: str, source: SourceResult, env: ToolEnv, out: Path,
                  details: GGUFFile, started: float) -> dict[str, Any]:
    """A GGUF artifact's manifest: what it is, and what its tensors hold as read back from the file."""
    return {
        **manifest_identity(variant, key, recipe_hash, source),
        "tool_versions": tool_versions(env),
        "file": MODEL_FILE,
        "file_bytes": out.stat().st_size,
        "sha256": sha256_file(out),
        "bits_per_weight": details.bits_per_weight,
        "n_params": details.n_params,
        "tensor_type_counts": details.tensor_type_counts,
        "tensor_types_by_role": details.tensor_types_by_role,
        "tensors": [asdict(t) for t in details.tensors],
        "quantize_seconds": round(time.monotonic() - started, 2),
        "peak_rss_mb": details.peak_rss_mb,
    }


def link_or_copy(source: Path, out: Path) -> None:
    """A hard link where the filesystem allows one (no space used), else a copy."""
    try:
        os.link(source, out)
    except OSError:
        shutil.copy2(source, out)


SPEC = specs.register_quantizer(specs.QuantizerSpec(
    name="gguf", variant_models=(GGUFVariant,), env="llamacpp",
    make=lambda env, recipe: GGUFQuantizer(env, recipe.timeouts.quantize, recipe.calibration), deterministic=True,
))
