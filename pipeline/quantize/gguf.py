"""GGUF backend: HF dir -> F16 GGUF (convert_hf_to_gguf.py) -> the variant's type (llama-quantize).

The F16 conversion is shared by every quantized type of a source and cached on its own key.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from pipeline.artifacts import RESULT_FILE, Store, content_key, sha256_file, write_json
from pipeline.compat import GGUF_UNQUANTIZED
from pipeline.quantize import MANIFEST, STAGE, Artifact, manifest_identity, register
from pipeline.recipe import GGUFVariant
from pipeline.source import SourceResult
from pipeline.toolenv import ToolEnv, ToolEnvMissing, llamacpp_binary, llamacpp_env

BASE_STAGE = "gguf-base"
MODEL_FILE = "model.gguf"


def llama_cpp_src(env: ToolEnv) -> Path:
    """The llama.cpp tree vendored in the llama-cpp-python sdist that setup extracted."""
    found = sorted((env.root / "src").glob("llama_cpp_python-*/vendor/llama.cpp"))
    if not found:
        raise ToolEnvMissing(f"llama.cpp sources missing under {env.root / 'src'}: run `make setup`")
    return found[-1]


def tool_versions(env: ToolEnv) -> dict[str, str]:
    src = llama_cpp_src(env)
    return {"llama-cpp-python": src.parent.parent.name.split("-")[-1], "llama.cpp": "vendored"}


class GGUFQuantizer:
    def __init__(self, env: ToolEnv, threads: int = 2):
        self.env = env
        self.threads = threads

    def key(self, variant: GGUFVariant, source: SourceResult) -> str:
        return content_key("quantize", source.key, variant.quantize_params(), tool_versions(self.env))

    def _convert(self, source: SourceResult, store: Store, outtype: str) -> Path:
        key = content_key(BASE_STAGE, source.key, outtype, tool_versions(self.env))
        if not store.has(BASE_STAGE, key):
            with store.building(BASE_STAGE, key) as scratch:
                details = self.env.run_worker(
                    "pipeline.workers.gguf",
                    {"op": "convert", "llama_cpp_src": str(llama_cpp_src(self.env)),
                     "model_dir": str(source.model_dir), "out": str(scratch / MODEL_FILE), "outtype": outtype},
                    scratch, "convert.log",
                )
                write_json(scratch / RESULT_FILE, {"seconds": details["seconds"]})
        return store.entry(BASE_STAGE, key) / MODEL_FILE

    def quantize(self, variant: GGUFVariant, source: SourceResult, store: Store, recipe_hash: str) -> Artifact:
        key = self.key(variant, source)
        entry = store.entry(STAGE, key)
        if store.has(STAGE, key):
            return Artifact(variant.name, key, entry, entry / MODEL_FILE, store.result(STAGE, key), cached=True)
        started = time.monotonic()
        base = self._convert(source, store, "F16" if variant.type not in GGUF_UNQUANTIZED else variant.type)
        with store.building(STAGE, key) as scratch:
            out = scratch / MODEL_FILE
            if variant.type in GGUF_UNQUANTIZED:
                try:
                    os.link(base, out)  # the conversion itself is the artifact; a hard link costs no space
                except OSError:
                    shutil.copy2(base, out)
                details: dict[str, Any] = self.env.run_worker(
                    "pipeline.workers.gguf", {"op": "inspect", "path": str(out)}, scratch, "inspect.log"
                )
            else:
                details = self.env.run_worker(
                    "pipeline.workers.gguf",
                    {"op": "quantize", "llama_quantize": str(llamacpp_binary(self.env, "llama-quantize")),
                     "base": str(base), "out": str(out), "type": variant.type, "threads": self.threads},
                    scratch, "quantize.log",
                )
            manifest = {
                **manifest_identity(variant, key, recipe_hash, source),
                "tool_versions": tool_versions(self.env),
                "file": MODEL_FILE,
                "file_bytes": out.stat().st_size,
                "sha256": sha256_file(out),
                "bits_per_weight": details["bits_per_weight"],
                "n_params": details["n_params"],
                "tensor_type_counts": details["tensor_type_counts"],
                "tensor_types_by_role": details["tensor_types_by_role"],
                "tensors": details["tensors"],
                "quantize_seconds": round(time.monotonic() - started, 2),
                "peak_rss_mb": details.get("peak_rss_mb"),
            }
            write_json(scratch / MANIFEST, manifest)
            write_json(scratch / RESULT_FILE, manifest)
        return Artifact(variant.name, key, entry, entry / MODEL_FILE, manifest, cached=False)


register("gguf", lambda envs_root, recipe: GGUFQuantizer(llamacpp_env(envs_root)))
