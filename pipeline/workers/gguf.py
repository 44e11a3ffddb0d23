"""GGUF conversion, quantization and inspection (runs in the llama.cpp env).

Conversion uses convert_hf_to_gguf.py from the llama-cpp-python sdist (its gguf-py on the path,
since PyPI gguf 0.19 breaks it); quantization uses the llama-quantize built beside it. Inspection
reads the per-tensor types back, because k-quants silently fall back on widths not divisible by 256.
"""

from __future__ import annotations

import collections
import hashlib
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

from pipeline.workers.calibration import calibration_texts
from pipeline.workers.handoff import serve
from pipeline.workers.messages import (GGUFConvertRequest, GGUFFile, GGUFImatrixRequest, GGUFInspectRequest,
                                       GGUFQuantizeRequest, GGUFTensor, ImatrixResult)


def convert(request: GGUFConvertRequest) -> GGUFFile:
    llama_cpp_src = Path(request.llama_cpp_src)
    out = Path(request.out)
    env = dict(os.environ, PYTHONPATH=str(llama_cpp_src / "gguf-py"))
    started = time.monotonic()
    subprocess.run(
        [sys.executable, str(llama_cpp_src / "convert_hf_to_gguf.py"), request.model_dir,
         "--outfile", str(out), "--outtype", request.outtype.lower()],
        check=True, env=env,
    )
    return inspect(out, seconds=round(time.monotonic() - started, 2), peak_rss_mb=_peak_rss_mb())


def _peak_rss_mb() -> float:
    """Largest resident set of this worker or the tool it ran (converter, llama-quantize)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) / 1024, 1)


def quantize(request: GGUFQuantizeRequest) -> GGUFFile:
    out = Path(request.out)
    started = time.monotonic()
    # llama-quantize writes the importance matrix's path into the file's metadata: named from its own
    # folder, so the bytes do not depend on where the store is
    imatrix = ["--imatrix", Path(request.imatrix).name] if request.imatrix else []
    subprocess.run([request.llama_quantize, *imatrix, str(Path(request.base).resolve()), str(out.resolve()),
                    request.type, str(request.threads)], check=True,
                   cwd=Path(request.imatrix).parent if request.imatrix else None)
    return inspect(out, seconds=round(time.monotonic() - started, 2), peak_rss_mb=_peak_rss_mb())


def imatrix(request: GGUFImatrixRequest) -> ImatrixResult:
    """The importance matrix: mean squared activations into every weight, over the calibration texts
    (the recipe's first `samples`, joined), `samples` chunks of `max_seq_len` tokens at most."""
    out = Path(request.out).resolve()
    texts = calibration_texts(request.calibration)
    text_file = out.with_name("calibration.txt")
    text_file.write_text("\n\n".join(texts))
    started = time.monotonic()
    # run beside its files, named without a folder: llama-imatrix records the text file's path in the
    # matrix (and llama-quantize copies it into the model), so the bytes would depend on the store's place
    run = subprocess.run([request.llama_imatrix, "-m", str(Path(request.base).resolve()), "-f", text_file.name,
                          "-o", out.name, "-c", str(request.calibration.max_seq_len),
                          "--chunks", str(request.calibration.samples), "-t", str(request.threads), "--no-ppl"],
                         capture_output=True, text=True, cwd=out.parent)
    print(run.stdout + run.stderr, file=sys.stderr)  # the worker's log keeps the tool's
    if run.returncode != 0 or not out.is_file():
        tail = "\n".join((run.stdout + run.stderr).strip().splitlines()[-5:])
        raise RuntimeError(f"llama-imatrix exited {run.returncode}: {tail}")
    chunks = re.search(r"computing over (\d+) chunks", run.stdout + run.stderr)
    return ImatrixResult(seconds=round(time.monotonic() - started, 2),
                         calibration_sha256=hashlib.sha256("\0".join(texts).encode()).hexdigest(),
                         chunks=int(chunks.group(1)) if chunks else 0, peak_rss_mb=_peak_rss_mb())


def inspect_file(request: GGUFInspectRequest) -> GGUFFile:
    return inspect(Path(request.path))


def inspect(path: Path, seconds: float = 0.0, peak_rss_mb: float | None = None) -> GGUFFile:
    """Per-tensor types and the effective bits per weight actually stored in a GGUF file."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    tensors = []
    n_params = 0
    n_bytes = 0
    for tensor in reader.tensors:
        n_params += int(tensor.n_elements)
        n_bytes += int(tensor.n_bytes)
        tensors.append(GGUFTensor(name=tensor.name, type=tensor.tensor_type.name, shape=[int(d) for d in tensor.shape]))
    counts = collections.Counter(t.type for t in tensors)
    # Group by role (blk.N.attn_q.weight -> attn_q.weight) so fallbacks read at a glance.
    by_role: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for t in tensors:
        by_role[re.sub(r"^blk\.\d+\.", "", t.name)][t.type] += 1
    return GGUFFile(
        file_bytes=path.stat().st_size,
        n_params=n_params,
        tensor_bytes=n_bytes,
        bits_per_weight=round(8 * n_bytes / n_params, 3) if n_params else None,
        tensor_type_counts=dict(counts),
        tensor_types_by_role={role: dict(c) for role, c in sorted(by_role.items())},
        tensors=tensors,
        seconds=seconds,
        peak_rss_mb=peak_rss_mb,
    )


if __name__ == "__main__":
    serve(convert, quantize, inspect_file, imatrix)
