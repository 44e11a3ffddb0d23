"""Benchmark: is our load measurement right, and does it repeat? Two checks on llama-server serving
the demo model (the packaged Q4_1 GGUF, one thread, four slots) on loopback:

- run-to-run spread: the same sweep level on a fresh server `--runs` times (new prompts each time),
  each run measuring it in `--rounds` passes (`load.repeats`); each run's output-throughput and
  median-TTFT intervals should cover the others' estimates;
- cross-check: our GuideLLM sweep and vLLM's own `bench serve` (random prompts of the same token
  counts, the same concurrency, ignore_eos) on one server: output throughput and median TTFT should
  agree within 5%.

Writes JSON to --out and prints a table. Needs `make setup` (the guidellm, llamacpp, transformers
and vllm environments). Usage: python -m benchmarks.load_check [--runs 3] [--rounds 3] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

from pipeline.artifacts import Store, write_json
from pipeline.engines.server import ServerProcess, new_api_key
from pipeline.measure import load
from pipeline.measure.latency import Interval, summarize
from pipeline.recipe.load import load_recipe
from pipeline.recipe.traffic import LoadConfig
from pipeline.settings import REPO_ROOT, Settings
from pipeline.source import package_file
from pipeline import source
from pipeline.toolenv import TRANSFORMERS, llamacpp_binary, tool_env


def serve(settings: Settings, gguf: Path, log: Path, slots: int) -> tuple[ServerProcess, str]:
    """llama-server on a free loopback port (its URL is `server.base_url` once started) and its key."""
    key = new_api_key()

    def argv(port: int) -> list[str]:
        return [str(llamacpp_binary(tool_env("llamacpp", settings.envs), "llama-server")), "--model", str(gguf),
                "--host", "127.0.0.1", "--port", str(port), "--api-key", key, "--alias", "demo", "--threads", "1",
                "--threads-batch", "1", "--parallel", str(slots), "--ctx-size", str(slots * 1024), "--no-webui"]
    return ServerProcess(argv, "/health", log, 120), key


def ours(settings: Settings, config: LoadConfig, base_url: str, key: str, tokenizer: Path, out: Path) -> dict:
    job = load.request(config, base_url, key, "demo", tokenizer, out)
    output = load.generate(tool_env(load.ENV, settings.envs), job, out, timeout_s=1800)
    summary = summarize(output.levels, f"{config.levels[0]:g} streams")  # one level, its rounds
    def plain(i: Interval) -> dict:
        return {"estimate": round(i.estimate, 3), "low": i.low and round(i.low, 3), "high": i.high and round(i.high, 3)}
    return {"rounds": summary.rounds, "measured": summary.measured, "errors": summary.errors, "mean_in_flight": summary.mean_in_flight,
            "output_tokens_per_s": plain(summary.output_tokens_per_s),
            "ttft_median_ms": plain(summary.latency_ms["ttft_ms"]["p50"]),
            "tpot_median_ms": plain(summary.latency_ms["tpot_ms"]["p50"])}


def vllm_bench(settings: Settings, config: LoadConfig, base_url: str, key: str, tokenizer: Path, out: Path) -> dict:
    result = out / "vllm_bench_serve.json"
    requests = config.requests_per_level + int(config.levels[0]) * config.warmup_requests
    argv = [str(tool_env("vllm", settings.envs).python), "-m", "benchmarks.vllm_bench_serve",
            "--backend", "openai", "--base-url", base_url, "--endpoint", "/v1/completions", "--model", "demo",
            "--tokenizer", str(tokenizer), "--dataset-name", "random",
            "--random-input-len", str(config.prompt_tokens.mean), "--random-output-len", str(config.output_tokens.mean),
            "--random-range-ratio", "0", "--num-prompts", str(requests), "--max-concurrency", str(int(config.levels[0])),
            "--request-rate", "inf", "--ignore-eos", "--seed", str(config.seed + 1), "--percentile-metrics",
            "ttft,tpot,itl,e2el", "--save-result", "--result-dir", str(out), "--result-filename", result.name]
    env = {**os.environ, "OPENAI_API_KEY": key, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    with open(out / "vllm_bench_serve.log", "wb") as log:
        subprocess.run(argv, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, check=True, timeout=1800)
    data = json.loads(result.read_text())
    return {"completed": data["completed"], "output_tokens_per_s": round(data["output_throughput"], 3),
            "ttft_median_ms": round(data["median_ttft_ms"], 3), "tpot_median_ms": round(data["median_tpot_ms"], 3),
            "total_input_tokens": data["total_input_tokens"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3, help="fresh server each run")
    parser.add_argument("--rounds", type=int, default=3, help="passes within a run (load.repeats)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--requests", type=int, default=16, help="measured requests per round")
    parser.add_argument("--crosscheck-requests", type=int, default=32, help="0: no cross-check")
    parser.add_argument("--out", default="artifacts/benchmarks/load_check.json")
    parser.add_argument("--vllm-first", action="store_true", help="run vLLM's client first in the cross-check")
    args = parser.parse_args()
    settings = Settings()
    recipe = load_recipe(REPO_ROOT / "recipes" / "demo.yaml")
    model = source.run(recipe.model, Store(settings.artifacts), tool_env(TRANSFORMERS, settings.envs),
                       recipe.timeouts.source)
    gguf = package_file(recipe.model)
    work = settings.artifacts / "benchmarks" / "load_check"
    work.mkdir(parents=True, exist_ok=True)
    base = {"levels": [args.concurrency], "requests_per_level": args.requests, "warmup_requests": 1,
            "prompt_tokens": 128, "output_tokens": 64,  # fixed here: the figures in the README are at these
            "max_seconds_per_level": 1800}

    runs = []
    for run in range(args.runs):
        server, key = serve(settings, gguf, work / f"server-run{run}.log", args.concurrency)
        with server:
            url = server.base_url
            started = time.monotonic()
            runs.append({**ours(settings, LoadConfig(**base, repeats=args.rounds, seed=100 + run), url, key,
                                model.model_dir, work / f"run{run}"), "seconds": round(time.monotonic() - started, 1)})
        print(f"run {run}: {runs[-1]['output_tokens_per_s']} tok/s, TTFT p50 {runs[-1]['ttft_median_ms']}")

    def covers(metric: str) -> bool:
        return all((r[metric]["low"] is None or r[metric]["low"] <= o[metric]["estimate"])
                   and (r[metric]["high"] is None or o[metric]["estimate"] <= r[metric]["high"])
                   for r in runs for o in runs)

    result = {
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "workload": {**base, "rounds": args.rounds, "server": "llama-server, demo Q4_1 GGUF, 1 thread, parallel = concurrency"},
        "runs": runs,
        "runs_cover_each_other": {"output_tokens_per_s": covers("output_tokens_per_s"),
                                  "ttft_median_ms": covers("ttft_median_ms")},
    }
    if args.crosscheck_requests:
        result["crosscheck"] = crosscheck(settings, args, {**base, "requests_per_level": args.crosscheck_requests},
                                          gguf, model.model_dir, work)
    write_json(Path(args.out), result)
    print(json.dumps({k: v for k, v in result.items() if k in ("runs_cover_each_other", "crosscheck")}, indent=2))


def crosscheck(settings: Settings, args: argparse.Namespace, base: dict, gguf: Path, tokenizer: Path,
               work: Path) -> dict:
    """Our sweep and vLLM's client, one after the other, on one server."""
    server, key = serve(settings, gguf, work / "server-crosscheck.log", args.concurrency)
    with server:
        url = server.base_url
        config = LoadConfig(**base, repeats=1, seed=200)  # one pass, as vLLM's client sends
        if args.vllm_first:  # which client goes second on the same server can matter
            vllm = vllm_bench(settings, config, url, key, tokenizer, work)
        guidellm = ours(settings, config, url, key, tokenizer, work / "crosscheck-guidellm")
        if not args.vllm_first:
            vllm = vllm_bench(settings, config, url, key, tokenizer, work)

    def gap(metric: str) -> float:
        return round(guidellm[metric]["estimate"] / vllm[metric] - 1, 4)

    return {"requests": base["requests_per_level"], "order": "vllm first" if args.vllm_first else "guidellm first",
            "guidellm": guidellm, "vllm_bench_serve": vllm,
            "relative_gap": {"output_tokens_per_s": gap("output_tokens_per_s"), "ttft_median_ms": gap("ttft_median_ms")}}


if __name__ == "__main__":
    main()
