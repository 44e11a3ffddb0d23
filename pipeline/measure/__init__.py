"""Measure stage: serve one variant once and take every missing measurement against that server.

Task evals and the load benchmark are cached on separate keys (changing the workload does not redo
the evals). Failures are returned as reasons, never cached, and keep their logs under failed/.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import httpx

from pipeline.artifacts import RESULT_FILE, Store, content_key, write_json
from pipeline.engines import engine_for
from pipeline.engines.server import ServerFailed
from pipeline.measure import bench, divergence, evals, parity
from pipeline.quantize import Artifact
from pipeline.recipe import Recipe
from pipeline.source import SourceResult
from pipeline.toolenv import ToolFailed, llamacpp_env

SERVER_LOG = "server.log"


class MeasureFailed(Exception):
    pass


@dataclass(frozen=True)
class Measurements:
    evals: evals.EvalResult | None
    bench: bench.BenchResult | None
    bench_folder: Path | None
    eval_error: str | None
    bench_error: str | None
    server_log: Path | None
    divergence: dict[str, Any] | None = None
    divergence_error: str | None = None
    parity: dict[str, Any] | None = None  # references only: engine vs transformers
    parity_error: str | None = None


def keys(recipe: Recipe, variant_engine: str, artifact_key: str) -> tuple[str, str]:
    # Only what changes serving belongs in the bench key (the scorer's threads do not).
    engine_config = getattr(recipe.engines, variant_engine).model_dump(exclude={"scorer_threads"})
    eval_key = content_key("evals", artifact_key, recipe.evals.model_dump(),
                           evals.evalset_fingerprint(recipe.evals.tasks), evals.SCORER_VERSION)
    bench_key = content_key("bench", artifact_key, engine_config, recipe.bench.model_dump())
    return eval_key, bench_key


def run(recipe: Recipe, engine_name: str, artifact: Artifact, reference: Artifact | None, store: Store,
        envs_root: Path, source: SourceResult, say: Callable[[str], None] = lambda _: None) -> Measurements:
    """Every measurement of `artifact`; `reference` is its engine's reference (itself for the reference)."""
    scratch_root = store.root / "tmp"
    logdir = Path(tempfile.mkdtemp(dir=_mkdir(scratch_root), prefix=f"serve-{artifact.variant}-"))
    try:
        return _run(recipe, engine_name, artifact, reference, store, envs_root, source, say, logdir)
    finally:
        shutil.rmtree(logdir, ignore_errors=True)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run(recipe: Recipe, engine_name: str, artifact: Artifact, reference: Artifact | None, store: Store,
         envs_root: Path, source: SourceResult, say: Callable[[str], None], logdir: Path) -> Measurements:
    log_path = logdir / SERVER_LOG
    engine = engine_for(engine_name)(artifact, recipe.engines, envs_root, store.root, log_path)
    env = engine.env
    div_metrics = div_error = None
    have_div = True  # measured while served (vLLM) and not cached yet: False
    if reference is None:
        div_error = f"no reference artifact on engine {engine_name} to compare with"
    elif engine.divergence_worker is not None:
        try:
            div = divergence.run(recipe.divergence, engine.divergence_worker, artifact.model_path, artifact.key,
                                 reference.model_path, reference.key, store, env, engine.scorer_threads)
            div_metrics = div.metrics
            if not div.cached:
                _say_divergence(say, reference, div.metrics)
        except ToolFailed as exc:
            div_error = str(exc)
    else:
        served_key = divergence.key(recipe.divergence, artifact.key, reference.key,
                                    divergence.served_method(engine.max_top_logprobs))
        have_div = store.has(divergence.STAGE, served_key)
        div_metrics = store.result(divergence.STAGE, served_key) if have_div else None
    eval_key, bench_key = keys(recipe, engine_name, artifact.key)
    have_eval, have_bench = store.has(evals.STAGE, eval_key), store.has(bench.STAGE, bench_key)
    is_reference = reference is not None and reference.key == artifact.key
    parity_key = content_key(parity.STAGE, artifact.key, engine_name, recipe.parity.model_dump())
    have_parity = not is_reference or store.has(parity.STAGE, parity_key)
    parity_result = store.result(parity.STAGE, parity_key) if is_reference and have_parity else None
    parity_error = None
    eval_result = (evals.EvalResult.from_json(eval_key, store.entry(evals.STAGE, eval_key),
                                              store.result(evals.STAGE, eval_key), cached=True) if have_eval else None)
    bench_result = bench.BenchResult(**store.result(bench.STAGE, bench_key)) if have_bench else None
    if have_eval and have_bench and have_parity and have_div:
        return Measurements(eval_result, bench_result, store.entry(bench.STAGE, bench_key), None, None,
                            store.entry(bench.STAGE, bench_key) / SERVER_LOG, div_metrics, div_error,
                            parity_result)

    eval_error = bench_error = None
    built: list[Path] = []
    try:
        say(f"starting {engine_name} server")
        with engine:
            say(f"server ready in {engine.ready_seconds} s")
            if not have_parity:
                try:
                    parity_result = _run_parity(recipe, engine, source, store, parity_key, envs_root)
                    say(f"engine parity vs transformers: mean |Δ logprob| {parity_result['mean_abs_diff']} nats/token")
                except (ToolFailed, httpx.HTTPError, KeyError) as exc:
                    parity_error = f"{type(exc).__name__}: {exc}"
            if not have_div:
                assert reference is not None
                try:
                    div = divergence.run_served(recipe.divergence, engine, artifact.key, reference.key, store)
                    div_metrics = div.metrics
                    _say_divergence(say, reference, div.metrics)
                except (ValueError, httpx.HTTPError, KeyError) as exc:
                    div_error = f"{type(exc).__name__}: {exc}"
            if not have_eval:
                say("running task evals")
                try:
                    eval_result = _run_evals(recipe, artifact, engine, store, eval_key)
                    built.append(eval_result.folder)
                except (ToolFailed, MeasureFailed) as exc:
                    eval_error = str(exc)
            if not have_bench:
                say(f"load benchmark: {recipe.bench.requests} requests, concurrency {recipe.bench.concurrency}")
                bench_result = bench.run(engine.base_url, engine.api_key, engine.served_model, recipe.bench)
                if bench_result.errors == 0:
                    with store.building(bench.STAGE, bench_key) as scratch:
                        write_json(scratch / RESULT_FILE, bench_result.to_json())
                    built.append(store.entry(bench.STAGE, bench_key))
                else:  # errors may be passing trouble: report them, do not cache them
                    bench_error = f"{bench_result.errors} of {bench_result.requests} requests failed: {bench_result.first_error}"
    except ServerFailed as exc:
        if not have_div:
            div_error = div_error or f"server failed: {exc}"
        eval_error = eval_error or f"server failed: {exc}"
        bench_error = bench_error or f"server failed: {exc}"
        if failed := _keep_failed_log(store, artifact, log_path):
            log_path = failed
    finally:
        for folder in built:
            if log_path.is_file():
                shutil.copy2(log_path, folder / SERVER_LOG)
    bench_folder = store.entry(bench.STAGE, bench_key) if store.has(bench.STAGE, bench_key) else None
    server_log = next((f / SERVER_LOG for f in built if (f / SERVER_LOG).is_file()), None)
    return Measurements(eval_result, bench_result, bench_folder, eval_error, bench_error, server_log,
                        div_metrics, div_error, parity_result, parity_error)


def _say_divergence(say: Callable[[str], None], reference: Artifact, metrics: dict[str, Any]) -> None:
    say(f"divergence vs {reference.variant}: KL {metrics['kld_mean']:.4f}, flips {metrics['flip_rate']:.3f}"
        f" ({metrics['seconds']} s)")


def _run_parity(recipe: Recipe, engine: Any, source: SourceResult, store: Store, parity_key: str,
                envs_root: Path) -> dict[str, Any]:
    hf = parity.transformers_logprobs(recipe.parity, source, store, llamacpp_env(envs_root))
    with store.building(parity.STAGE, parity_key) as scratch:
        ours = engine.prompt_logprobs(hf["token_ids"], scratch)
        result = {**parity.compare(ours, hf["token_logprobs"]), "engine": engine.name,
                  "limit": recipe.parity.max_mean_abs_diff}
        write_json(scratch / RESULT_FILE, result)
    return result


def _run_evals(recipe: Recipe, artifact: Artifact, engine: Any, store: Store, eval_key: str) -> evals.EvalResult:
    with store.building(evals.STAGE, eval_key) as scratch:
        names = evals.task_names(recipe.evals.tasks)
        request = evals.request_for(recipe.evals, artifact.model_path, engine, scratch)
        data = engine.env.run_worker(engine.eval_worker, request, scratch, "lmeval.log")
        if not data["alignment"].get("passed"):
            raise MeasureFailed(f"alignment probe failed, no score recorded: {data['alignment'].get('reason')}")
        by_evalset = {evalset: data["tasks"][lm_name] for evalset, lm_name in names.items()}
        result = {**data, "tasks": by_evalset}
        write_json(scratch / RESULT_FILE, result)
    folder = store.entry(evals.STAGE, eval_key)
    return evals.EvalResult.from_json(eval_key, folder, result, cached=False)


def _keep_failed_log(store: Store, artifact: Artifact, log_path: Path) -> Path | None:
    if not log_path.is_file():
        return None
    target = store.root / "failed" / f"serve-{artifact.variant}-{artifact.key}.log"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(log_path, target)
    return target
