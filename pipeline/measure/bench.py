"""Load benchmark: a fixed workload of concurrent streaming completions against the served variant.

Every request asks for the same prompt length and exactly `output_tokens` tokens (`ignore_eos`), so
variants are compared on equal work. Latencies follow `vllm bench serve`'s conventions: TTFT to the
first streamed token, ITL between streamed tokens, E2E per request, output tokens/s over the wall
time of the measured phase.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from pipeline.artifacts import RESULT_FILE, Store, content_key, write_json
from pipeline.engines import EngineContext
from pipeline.recipe.schema import BenchConfig, EngineConfig
from pipeline.workers.handoff import from_plain, to_plain

STAGE = "bench"

# Common words: the prompt is plain text every tokenizer handles, made unique per request so no
# engine can serve it from a prefix cache.
_WORDS = (
    "time year people way day man thing woman life child world school state family student group "
    "country problem hand part place case week company system program question work government "
    "number night point home water room mother area money story fact month lot right study book eye "
    "job word business issue side kind head house service friend father power hour game line end "
    "member law car city community name president team minute idea kid body information back parent"
).split()


@dataclass(frozen=True)
class RequestTiming:
    ok: bool
    ttft_s: float | None = None
    e2e_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    output_tokens: int = 0
    prompt_tokens: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class BenchResult:
    requests: int
    errors: int
    error_rate: float
    concurrency: int
    duration_s: float
    output_tokens_per_s: float
    requests_per_s: float
    mean_prompt_tokens: float | None
    mean_output_tokens: float
    ttft_ms: dict[str, float]
    itl_ms: dict[str, float]
    e2e_ms: dict[str, float]
    first_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def key(config: BenchConfig, engine_config: EngineConfig, artifact_key: str, build: str | None) -> str:
    # Everything that changes serving belongs here (an in-process scorer's settings do not).
    return content_key(STAGE, artifact_key, build, engine_config.model_dump(exclude=set(engine_config.not_serving)),
                       config.model_dump())


def cached(store: Store, bench_key: str) -> BenchResult | None:
    return from_plain(store.result(STAGE, bench_key), BenchResult) if store.has(STAGE, bench_key) else None


def percentiles(values: list[float], scale: float = 1000.0) -> dict[str, float]:
    """p50/p95/p99/mean (linear interpolation, like numpy's default); NaN when there is nothing."""
    if not values:
        return {"p50": math.nan, "p95": math.nan, "p99": math.nan, "mean": math.nan}
    ordered = sorted(values)

    def at(q: float) -> float:
        pos = (len(ordered) - 1) * q
        lo, hi = math.floor(pos), math.ceil(pos)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

    return {"p50": round(at(0.50) * scale, 3), "p95": round(at(0.95) * scale, 3),
            "p99": round(at(0.99) * scale, 3), "mean": round(sum(ordered) / len(ordered) * scale, 3)}


def make_prompt(index: int, n_words: int, seed: int = 0) -> str:
    rng = random.Random(seed * 1_000_003 + index)
    return f"Request {index}. " + " ".join(rng.choice(_WORDS) for _ in range(n_words))


async def _one(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> RequestTiming:
    started = time.perf_counter()
    ttft: float | None = None
    last: float | None = None
    itl: list[float] = []
    tokens = 0
    prompt_tokens = None
    try:
        async with client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")[:300]
                return RequestTiming(ok=False, error=f"HTTP {response.status_code}: {text}")
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                chunk = json.loads(payload)
                if chunk.get("usage"):
                    prompt_tokens = chunk["usage"].get("prompt_tokens")
                    tokens = chunk["usage"].get("completion_tokens", tokens)
                choices = chunk.get("choices") or []
                if not choices or not choices[0].get("text"):
                    continue
                now = time.perf_counter()
                if ttft is None:
                    ttft = now - started
                else:
                    itl.append(now - last)  # type: ignore[operator]
                last = now
                if not chunk.get("usage"):
                    tokens += 1
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        return RequestTiming(ok=False, error=f"{type(exc).__name__}: {exc}")
    if ttft is None:
        return RequestTiming(ok=False, error="stream ended without a token")
    return RequestTiming(True, ttft, time.perf_counter() - started, itl, tokens, prompt_tokens)


async def _run(base_url: str, api_key: str, model: str, config: BenchConfig) -> tuple[list[RequestTiming], float]:
    url = f"{base_url}/v1/completions"
    # ~0.75 words per token for plain English with these tokenizers; the real count is reported.
    n_words = max(1, int(config.prompt_tokens * 0.75))

    def body(i: int) -> dict[str, Any]:
        return {"model": model, "prompt": make_prompt(i, n_words), "max_tokens": config.output_tokens,
                "temperature": 0, "stream": True, "ignore_eos": True,
                "stream_options": {"include_usage": True}}

    limits = httpx.Limits(max_connections=config.concurrency + 1)
    timeout = httpx.Timeout(config.timeout_s)
    headers = {"Authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=timeout) as client:
        for i in range(config.warmup_requests):
            await _one(client, url, body(-1 - i))
        gate = asyncio.Semaphore(config.concurrency)

        async def bounded(i: int) -> RequestTiming:
            async with gate:
                return await _one(client, url, body(i))

        started = time.perf_counter()
        timings = await asyncio.gather(*(bounded(i) for i in range(config.requests)))
        return list(timings), time.perf_counter() - started


def summarize(timings: list[RequestTiming], duration_s: float, concurrency: int) -> BenchResult:
    ok = [t for t in timings if t.ok]
    errors = len(timings) - len(ok)
    output_tokens = sum(t.output_tokens for t in ok)
    prompts = [t.prompt_tokens for t in ok if t.prompt_tokens is not None]
    return BenchResult(
        requests=len(timings),
        errors=errors,
        error_rate=round(errors / len(timings), 4) if timings else 1.0,
        concurrency=concurrency,
        duration_s=round(duration_s, 3),
        output_tokens_per_s=round(output_tokens / duration_s, 3) if duration_s > 0 else 0.0,
        requests_per_s=round(len(ok) / duration_s, 4) if duration_s > 0 else 0.0,
        mean_prompt_tokens=round(sum(prompts) / len(prompts), 1) if prompts else None,
        mean_output_tokens=round(output_tokens / len(ok), 2) if ok else 0.0,
        ttft_ms=percentiles([t.ttft_s for t in ok if t.ttft_s is not None]),
        itl_ms=percentiles([x for t in ok for x in t.itl_s]),
        e2e_ms=percentiles([t.e2e_s for t in ok if t.e2e_s is not None]),
        first_error=next((t.error for t in timings if not t.ok), None),
    )


def load(base_url: str, api_key: str, model: str, config: BenchConfig) -> BenchResult:
    """The workload against a server: what every request measured, summarised."""
    timings, duration = asyncio.run(_run(base_url, api_key, model, config))
    return summarize(timings, duration, config.concurrency)


class BenchFailed(Exception):
    """Requests failed: maybe passing trouble, so the result is reported but never cached."""

    def __init__(self, message: str, result: BenchResult):
        super().__init__(message)
        self.result = result


def run(engine: EngineContext, store: Store, config: BenchConfig, bench_key: str) -> BenchResult:
    server = engine.running()
    result = load(server.base_url, server.api_key, server.served_model, config)
    if result.errors:
        raise BenchFailed(f"{result.errors} of {result.requests} requests failed: {result.first_error}", result)
    with store.building(STAGE, bench_key) as scratch:
        write_json(scratch / RESULT_FILE, to_plain(result))
    return result
