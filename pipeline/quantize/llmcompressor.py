"""llm-compressor backend: compressed-tensors checkpoints for vLLM, made by `oneshot` in the
llm-compressor environment. Each scheme is a recipe model here that says which modifiers make it.

Calibration data is part of the key: the same recipe with other calibration text is another artifact.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, ClassVar, Literal

from pydantic import Field

from pipeline import specs
from pipeline.artifacts import Store, content_key
from pipeline.model_info import ModelInfo, divisors, pattern_matches
from pipeline.quantize import (STAGE, Artifact, built_artifact, cached_artifact, manifest_identity,
                               write_manifest)
from pipeline.quantize.calibration import calibration_data, calibration_fingerprint
from pipeline.quantize.passthrough import MODEL_DIR, safetensors_summary
from pipeline.recipe.schema import CalibrationConfig, VariantConfig
from pipeline.settings import REPO_ROOT
from pipeline.source import SourceResult
from pipeline.toolenv import ToolEnv
from pipeline.workers.messages import Modifier, OneshotRequest, OneshotResult

GPTQ = "llmcompressor.modifiers.gptq"
QUANTIZATION = "llmcompressor.modifiers.quantization"


class LLMCompressorVariant(VariantConfig):
    """A compressed-tensors checkpoint made by llm-compressor's oneshot, served by vLLM."""

    format: ClassVar[str] = "compressed-tensors"
    needs_calibration: ClassVar[bool] = True

    ignore: list[str] = Field(default_factory=lambda: ["lm_head"],
                              description="module names, 're:<regex>' patterns or class names left unquantized")

    def modifiers(self) -> list[Modifier]:
        """The llm-compressor recipe that makes this scheme, built in the worker."""
        raise NotImplementedError

    def model_errors(self, index: int, info: ModelInfo) -> list[str]:
        errors = []
        group = getattr(self, "group_size", None)
        widths = info.linear_widths()
        allowed = sorted(set.intersection(*(set(divisors(w)) for w in widths.values())))
        for what, width in widths.items():
            if group and width % group:
                errors.append(f"variants[{index}].group_size: {group} does not divide {what} {width}"
                              f" (allowed: {', '.join(map(str, allowed))}, or null for one scale per channel)")
                break
        modules = info.linear_modules()
        for j, pattern in enumerate(self.ignore):
            if modules is not None and not pattern_matches(pattern, modules):
                errors.append(f"variants[{index}].ignore[{j}]: {pattern!r} matches no module of this"
                              f" {info.architecture} (its names look like {', '.join(_examples(modules))};"
                              " 're:<regex>' for patterns)")
        return errors


def _examples(modules: list[str]) -> list[str]:
    """A few of a model's module names: those outside the layers (the head) and the first layer's."""
    first_layer = next((m for m in modules if re.search(r"\.0\.", m)), None)
    layer = first_layer[:re.search(r"\.0\.", first_layer).end()] if first_layer else None  # type: ignore[union-attr]
    outside = [m for m in modules if not re.search(r"\.\d+\.", m)]
    return (outside[:2] + [m for m in modules if layer and m.startswith(layer)][:4]) or modules[:4]


def _int4_groups(group_size: int | None, symmetric: bool) -> dict[str, Any]:
    weights: dict[str, Any] = {"num_bits": 4, "type": "int", "symmetric": symmetric,
                               "strategy": "group" if group_size else "channel"}
    if group_size:
        weights["group_size"] = group_size
    return {"group_0": {"targets": ["Linear"], "weights": weights}}


def _w4a16(group_size: int | None) -> str:
    return f"W4A16 g{group_size}" if group_size else "W4A16 per-channel"


class FP8DynamicVariant(LLMCompressorVariant):
    """FP8 weights (per channel) and dynamic per-token FP8 activations; needs no calibration data."""

    needs_calibration: ClassVar[bool] = False
    method: ClassVar[str] = "round-to-nearest"
    kind: Literal["fp8_dynamic"]

    def scheme(self) -> str:
        return "FP8_DYNAMIC"

    def weight_bits(self) -> int:
        return 8

    def modifiers(self) -> list[Modifier]:
        return [Modifier(module=QUANTIZATION, name="QuantizationModifier",
                         args={"targets": "Linear", "scheme": "FP8_DYNAMIC", "ignore": list(self.ignore)})]


class W8A8Int8Variant(LLMCompressorVariant):
    """INT8 weights and activations: SmoothQuant moves activation outliers into weights, then GPTQ."""

    method: ClassVar[str] = "smoothquant+gptq"
    kind: Literal["w8a8_int8"]

    def scheme(self) -> str:
        return "W8A8"

    def weight_bits(self) -> int:
        return 8
    smoothing_strength: float = Field(0.8, gt=0, lt=1)
    dampening: float = Field(0.01, gt=0, lt=1, description="GPTQ Hessian dampening fraction")

    def modifiers(self) -> list[Modifier]:
        return [Modifier(module="llmcompressor.modifiers.transform.smoothquant", name="SmoothQuantModifier",
                         args={"smoothing_strength": self.smoothing_strength}),
                Modifier(module=GPTQ, name="GPTQModifier", args={"targets": "Linear", "scheme": "W8A8",
                         "ignore": list(self.ignore), "dampening_frac": self.dampening})]


class W4A16GPTQVariant(LLMCompressorVariant):
    """4-bit integer weights, 16-bit activations, rounding chosen by GPTQ on calibration data."""

    method: ClassVar[str] = "gptq"
    kind: Literal["w4a16_gptq"]

    def scheme(self) -> str:
        return _w4a16(self.group_size)

    def weight_bits(self) -> int:
        return 4
    group_size: int | None = Field(64, ge=8, description="None: one scale per output channel")
    symmetric: bool = True
    dampening: float = Field(0.01, gt=0, lt=1, description="GPTQ Hessian dampening fraction")

    def modifiers(self) -> list[Modifier]:
        return [Modifier(module=GPTQ, name="GPTQModifier", args={
            "config_groups": _int4_groups(self.group_size, self.symmetric), "ignore": list(self.ignore),
            "dampening_frac": self.dampening})]


class W4A16AWQVariant(LLMCompressorVariant):
    """4-bit integer weights with activation-aware scaling (AWQ), then round-to-nearest. In 0.14 AWQ
    takes no quantization arguments: a QuantizationModifier after it quantizes."""

    method: ClassVar[str] = "awq"
    kind: Literal["w4a16_awq"]

    def scheme(self) -> str:
        return _w4a16(self.group_size)

    def weight_bits(self) -> int:
        return 4
    group_size: int | None = Field(64, ge=8, description="None: one scale per output channel")
    symmetric: bool = False

    def modifiers(self) -> list[Modifier]:
        return [Modifier(module="llmcompressor.modifiers.transform.awq", name="AWQModifier",
                         args={"duo_scaling": "both"}),
                Modifier(module=QUANTIZATION, name="QuantizationModifier", args={
                    "config_groups": _int4_groups(self.group_size, self.symmetric), "ignore": list(self.ignore)})]


# In the key: artifacts made before the worker fixed the calibration order (a random order each run)
# are not the bytes this key now stands for, so they are made again.
ORDERED_CALIBRATION = "calibration-in-order"


def requirements_sha(name: str) -> str:
    """The pinned requirement file of a tool env: when the pins change, the artifacts are redone."""
    return hashlib.sha256((REPO_ROOT / "requirements" / f"{name}.txt").read_bytes()).hexdigest()[:16]


class LLMCompressorQuantizer:
    def __init__(self, env: ToolEnv, calibration: CalibrationConfig, timeout_s: float):
        self.env = env
        self.calibration = calibration
        self.timeout_s = timeout_s

    def key(self, variant: LLMCompressorVariant, source: SourceResult) -> str:
        parts: list[Any] = ["quantize", source.key, variant.quantize_params(), requirements_sha("llmcompressor"),
                            ORDERED_CALIBRATION]
        if variant.needs_calibration:
            parts.append(calibration_fingerprint(self.calibration))
        return content_key(*parts)

    def quantize(self, variant: LLMCompressorVariant, source: SourceResult, store: Store,
                 recipe_hash: str) -> Artifact:
        key = self.key(variant, source)
        if found := cached_artifact(store, variant, key, MODEL_DIR):
            return found
        with store.building(STAGE, key) as scratch:
            out = scratch / MODEL_DIR
            details: OneshotResult = self.env.run_worker("pipeline.workers.llmcompressor_oneshot", OneshotRequest(
                model_dir=str(source.model_dir), out=str(out), modifiers=variant.modifiers(),
                calibration=calibration_data(self.calibration) if variant.needs_calibration else None,
            ), scratch, "quantize.log", timeout_s=self.timeout_s)
            summary = safetensors_summary(out)
            fingerprint = calibration_fingerprint(self.calibration) if variant.needs_calibration else None
            manifest = {
                **manifest_identity(variant, key, recipe_hash, source),
                "tool_versions": details.tool_versions,
                # plus the hash of the samples oneshot actually read (the first `samples` of the data)
                "calibration": {**fingerprint, "samples_sha256": details.calibration_sha256} if fingerprint else None,
                "file": MODEL_DIR,
                **summary,
                "n_params": details.n_params,
                "bits_per_weight": round(8 * summary["file_bytes"] / details.n_params, 3),
                "quantize_seconds": details.seconds,
                "peak_rss_mb": details.peak_rss_mb,
            }
            write_manifest(scratch, manifest)
        return built_artifact(store, variant, key, MODEL_DIR, manifest)


SPEC = specs.register_quantizer(specs.QuantizerSpec(
    name="llmcompressor", env="llmcompressor",
    variant_models=(FP8DynamicVariant, W8A8Int8Variant, W4A16GPTQVariant, W4A16AWQVariant),
    make=lambda env, recipe: LLMCompressorQuantizer(env, recipe.calibration, recipe.timeouts.quantize),
    deterministic=True,  # since the worker fixes the calibration order and the seeds
))
