"""The same measurements as a `quantgate run` of benchmarks/recipes/by_hand.yaml, made by hand with
the tools themselves, in sequence, as an engineer without the pipeline would: llm-compressor's
example script, then for each model one `vllm serve` for the evals (the `lm-eval` CLI, one call
per task, one request at a time: its default) and one for the load test (`vllm bench serve`, one
call per concurrency level). `make bench` times this against the pipeline (benchmarks/suite.py).

Both start from the same dequantized model (the pipeline's source stage, made before either is
timed). The pipeline does more than this: engine parity of the reference, the divergence pass, the
paired statistics and the MLflow record, which have no by-hand counterpart here.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.engines.server import ServerProcess, new_api_key
from pipeline.recipe.schema import Recipe
from pipeline.settings import REPO_ROOT, Settings
from pipeline.toolenv import tool_env

HERE = Path(__file__).resolve().parent
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@dataclass
class HandRun:
    """Seconds per step, in the order run."""

    steps: list[tuple[str, float]] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return round(sum(s for _, s in self.steps), 1)

    def timed(self, name: str, action) -> None:
        started = time.monotonic()
        action()
        self.steps.append((name, round(time.monotonic() - started, 1)))
        print(f"  by hand: {name} {self.steps[-1][1]} s", flush=True)


def _run(argv: list[str], log: Path, cwd: Path = REPO_ROOT, env: dict[str, str] | None = None) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        done = subprocess.run(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, timeout=7200,
                              env={**os.environ, **OFFLINE, **(env or {})})
    if done.returncode:
        raise RuntimeError(f"{argv[0]} {' '.join(argv[1:4])} … exited {done.returncode}; see {log}")


def _vllm_server(settings: Settings, recipe: Recipe, model: Path, name: str, key: str, log: Path) -> ServerProcess:
    """`vllm serve` with the recipe's engine settings (the same flags the pipeline passes)."""
    env = tool_env("vllm", settings.envs)
    config = recipe.engines.vllm

    def argv(port: int) -> list[str]:
        return [str(env.python), "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1", "--port", str(port),
                "--model", str(model), "--served-model-name", name, "--max-model-len", str(config.max_model_len),
                "--max-num-seqs", str(config.max_num_seqs), "--dtype", config.dtype, "--enforce-eager"]

    environ = {**os.environ, **OFFLINE, "VLLM_CPU_KVCACHE_SPACE": str(config.cpu_kv_cache_gib), "VLLM_API_KEY": key,
               "VLLM_NO_USAGE_STATS": "1", "VLLM_CACHE_ROOT": str(log.parent / "vllm-cache")}
    return ServerProcess(argv, "/health", log, config.ready_timeout_s * settings.timeout_scale, env=environ)


def _lm_eval(settings: Settings, recipe: Recipe, server: ServerProcess, name: str, key: str, model: Path,
             out: Path) -> None:
    """One `lm-eval run` per task, from where the pipeline runs it: bundled sets from the repository
    root, tasks by path from their folder."""
    lm_eval = tool_env("vllm", settings.envs).root / "bin" / "lm-eval"
    model_args = (f"model={name},base_url={server.base_url}/v1/completions,tokenizer_backend=huggingface,"
                  f"tokenizer={model},tokenized_requests=False,num_concurrent=1,"
                  f"max_length={recipe.engines.vllm.max_model_len}")
    for task in recipe.evals.tasks:
        if task.path is None:  # a bundled set: evalsets/<name>/<name>.yaml, task qg_<name>
            cwd, include, task_name = REPO_ROOT, REPO_ROOT / "evalsets" / task.label, f"qg_{task.label}"
        else:
            cwd = include = task.path if task.path.is_dir() else task.path.parent
            task_name = task.task
        argv = [str(lm_eval), "run", "--model", "local-completions", "--model_args", model_args, "--tasks", task_name,
                "--include_path", str(include), "--log_samples", "--output_path", str(out / task.label)]
        if recipe.evals.limit:
            argv += ["--limit", str(recipe.evals.limit)]
        _run(argv, out / f"{task.label}.log", cwd=Path(cwd), env={"OPENAI_API_KEY": key})


def _bench_serve(settings: Settings, recipe: Recipe, server: ServerProcess, name: str, key: str, model: Path,
                 out: Path) -> None:
    """`vllm bench serve` at each of the recipe's concurrency levels: the same request count, prompt
    and output lengths as the pipeline's sweep (its passes and warm-up requests included)."""
    load = recipe.load
    for level in load.levels:
        requests = load.requests_per_level * load.repeats + int(level) * load.warmup_requests
        argv = [str(tool_env("vllm", settings.envs).python), "-m", "benchmarks.vllm_bench_serve",
                "--backend", "openai", "--base-url", server.base_url, "--endpoint", "/v1/completions",
                "--model", name, "--tokenizer", str(model), "--dataset-name", "random",
                "--random-input-len", str(load.prompt_tokens.mean), "--random-output-len", str(load.output_tokens.mean),
                "--random-range-ratio", "0", "--num-prompts", str(requests), "--max-concurrency", str(int(level)),
                "--request-rate", "inf", "--ignore-eos", "--save-result", "--result-dir", str(out),
                "--result-filename", f"level-{level:g}.json"]
        _run(argv, out / f"level-{level:g}.log", env={"OPENAI_API_KEY": key, "PYTHONPATH": str(REPO_ROOT)})


def run(settings: Settings, recipe: Recipe, source_model: Path, calibration_texts: list[str], work: Path) -> HandRun:
    """Quantize every non-reference variant with llm-compressor's script, then measure each model:
    evals on one server, the load test on another."""
    work.mkdir(parents=True, exist_ok=True)
    hand = HandRun()
    texts = work / "calibration.jsonl"
    texts.write_text("".join(json.dumps({"text": t}) + "\n" for t in calibration_texts))
    models = {}
    for variant in recipe.variants:
        if variant.reference:
            models[variant.name] = source_model
            continue
        if variant.kind != "w8a8_int8":
            raise SystemExit(f"benchmarks/by_hand.py scripts W8A8 only, not {variant.kind} ({variant.name})")
        out = work / "models" / variant.name
        python = tool_env("llmcompressor", settings.envs).python
        hand.timed(f"{variant.name}: llm-compressor script", lambda: _run(
            [str(python), str(HERE / "by_hand_scripts" / "w8a8_int8.py"), str(source_model), str(texts),
             str(recipe.calibration.max_seq_len), str(out)], work / f"{variant.name}-quantize.log"))
        models[variant.name] = out
    for name, model in models.items():
        key = new_api_key()
        for measurement, measure in (("lm-eval", _lm_eval), ("vllm bench serve", _bench_serve)):
            server = _vllm_server(settings, recipe, model, name, key, work / f"{name}-{measurement.split()[0]}-server.log")

            def serve_and_measure() -> None:
                with server:
                    measure(settings, recipe, server, name, key, model, work / name / measurement.replace(" ", "-"))
            hand.timed(f"{name}: vllm serve + {measurement}", serve_and_measure)
    return hand
