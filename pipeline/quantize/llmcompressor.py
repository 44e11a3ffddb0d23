"""llm-compressor backend: compressed-tensors checkpoints for vLLM, made by `oneshot` in the
llm-compressor environment; plus the unquantized HF reference those variants are compared with.

Calibration data is part of the key: the same recipe with other calibration text is another artifact.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import shutil
import time
from pathlib import Path
from typing import Any

from pipeline.artifacts import RESULT_FILE, Store, content_key, sha256_file, write_json
from pipeline.quantize import MANIFEST, STAGE, Artifact, manifest_identity, register
from pipeline.recipe import CalibrationConfig, HFVariant, _LLMCompressorVariant
from pipeline.settings import REPO_ROOT
from pipeline.source import SourceResult
from pipeline.toolenv import ToolEnv, llmcompressor_env
from pipeline.workers.calibration import builtin_texts

MODEL_DIR = "model"


def requirements_sha(name: str) -> str:
    """The pinned requirement file of a tool env: when the pins change, the artifacts are redone."""
    return hashlib.sha256((REPO_ROOT / "requirements" / f"{name}.txt").read_bytes()).hexdigest()[:16]


def calibration_fingerprint(config: CalibrationConfig) -> dict[str, Any]:
    if config.source == "builtin":
        data = hashlib.sha256("\0".join(builtin_texts()).encode()).hexdigest()
    elif config.source == "file":
        path = Path(config.path)  # type: ignore[arg-type]
        files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
        data = hashlib.sha256("".join(sha256_file(f) for f in files).encode()).hexdigest()
    else:
        data = f"{config.dataset}:{config.split}"
    return {**config.model_dump(mode="json", exclude={"path"}), "data": data}


def _safetensors_summary(folder: Path) -> dict[str, Any]:
    files = sorted(folder.glob("*.safetensors"))
    digest = hashlib.sha256()
    for f in files:
        digest.update(sha256_file(f).encode())
    return {"file_bytes": sum(f.stat().st_size for f in files), "sha256": digest.hexdigest(),
            "files": [f.name for f in files]}


def safetensors_params(folder: Path) -> int:
    """Number of stored values in a checkpoint, read from the safetensors headers (no tensor loaded)."""
    total = 0
    for path in sorted(folder.glob("*.safetensors")):
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        total += sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
    return total


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link a model directory (no copy of the weights); copy where links are not possible."""
    dst.mkdir(parents=True)
    for item in src.iterdir():
        if item.is_file() and item.suffix in (".json", ".safetensors", ".jinja", ".txt", ".model"):
            try:
                os.link(item, dst / item.name)
            except OSError:
                shutil.copy2(item, dst / item.name)


class LLMCompressorQuantizer:
    def __init__(self, env: ToolEnv, calibration: CalibrationConfig | None = None):
        self.env = env
        self.calibration = calibration

    def key(self, variant: _LLMCompressorVariant | HFVariant, source: SourceResult) -> str:
        parts: list[Any] = ["quantize", source.key, variant.quantize_params()]
        if isinstance(variant, _LLMCompressorVariant):
            parts.append(requirements_sha("llmcompressor"))
            if (calibration := self._calibration(variant)) is not None:
                parts.append(calibration)
        return content_key(*parts)

    def _calibration(self, variant: Any) -> dict[str, Any] | None:
        """The calibration data's fingerprint, for the schemes that read calibration data."""
        if isinstance(variant, _LLMCompressorVariant) and variant.needs_calibration and self.calibration is not None:
            return calibration_fingerprint(self.calibration)
        return None

    def quantize(self, variant: Any, source: SourceResult, store: Store, recipe_hash: str) -> Artifact:
        key = self.key(variant, source)
        entry = store.entry(STAGE, key)
        if store.has(STAGE, key):
            return Artifact(variant.name, key, entry, entry / MODEL_DIR, store.result(STAGE, key), cached=True)
        started = time.monotonic()
        with store.building(STAGE, key) as scratch:
            out = scratch / MODEL_DIR
            if isinstance(variant, HFVariant):
                _link_tree(source.model_dir, out)
                details: dict[str, Any] = {"seconds": 0.0, "n_params": safetensors_params(out)}
            else:
                assert self.calibration is not None
                details = self.env.run_worker(
                    "pipeline.workers.llmcompressor_oneshot",
                    {"model_dir": str(source.model_dir), "out": str(out), "scheme": variant.kind,
                     "params": variant.quantize_params(),
                     "calibration": {**self.calibration.model_dump(mode="json"), "path": str(self.calibration.path)}},
                    scratch, "quantize.log",
                )
            summary = _safetensors_summary(out)
            n_params = details.get("n_params")
            manifest = {
                **manifest_identity(variant, key, recipe_hash, source),
                "tool_versions": {k: v for k, v in details.items() if k.endswith("_version")}
                or {"requirements/llmcompressor.txt": requirements_sha("llmcompressor")},
                # plus the hash of the samples oneshot actually read (the first `samples` of the data)
                "calibration": ({**calibration, "samples_sha256": details.get("calibration_sha256")}
                                if (calibration := self._calibration(variant)) is not None else None),
                "file": MODEL_DIR,
                **summary,
                "n_params": n_params,
                "bits_per_weight": round(8 * summary["file_bytes"] / n_params, 3) if n_params else None,
                "quantize_seconds": details.get("seconds", round(time.monotonic() - started, 2)),
                "peak_rss_mb": details.get("peak_rss_mb"),
            }
            write_json(scratch / MANIFEST, manifest)
            write_json(scratch / RESULT_FILE, manifest)
        return Artifact(variant.name, key, entry, entry / MODEL_DIR, manifest, cached=False)


def _factory(envs_root: Path, recipe: Any) -> LLMCompressorQuantizer:
    return LLMCompressorQuantizer(llmcompressor_env(envs_root), recipe.calibration)


for _kind in ("hf", "fp8_dynamic", "w8a8_int8", "w4a16_gptq", "w4a16_awq"):
    register(_kind, _factory)
