"""The load sweep with GuideLLM (runs in the guidellm env): one benchmark per load level against the
served variant, then every request's timings handed back as `RequestRecord`s.

GuideLLM builds the prompts to exact token counts with the model's tokenizer, streams them through
/v1/completions or /v1/chat/completions with `ignore_eos` (so every request makes its full output
length), paces them (concurrent streams, or constant/Poisson arrivals) and times each request. The
warm-up is marked here (`records`), and each request's error is given its class. GuideLLM's own
report is kept next to ours (guidellm.json).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from pipeline.workers.handoff import serve
from pipeline.workers.messages import CANCELLED, LoadLevelRecords, LoadOutput, LoadRequest, RequestRecord, TokenLengthSpec

REPORT = "guidellm.json"


def _lengths(prefix: str, lengths: TokenLengthSpec) -> dict[str, int]:
    spec = {prefix: lengths.mean}
    if lengths.stdev:
        spec[f"{prefix}_stdev"] = lengths.stdev
    if lengths.min is not None:
        spec[f"{prefix}_min"] = lengths.min
    if lengths.max is not None:
        spec[f"{prefix}_max"] = lengths.max
    return spec


def data_spec(request: LoadRequest, workdir: Path, level_index: int = 0) -> dict[str, Any]:
    """Synthetic text of the recipe's lengths, or the recipe's prompts (as GuideLLM's columns).

    GuideLLM replays a file from its first row at every level, which a server's prompt cache would
    answer from memory; so each benchmark (a level in one pass) gets the file rotated to the rows after
    the previous one's."""
    if request.prompts_file:
        rows = [json.loads(line) for line in Path(request.prompts_file).read_text().splitlines() if line.strip()]
        sent = request.requests_per_level + warmup_count(request, max(request.levels))
        offset = (level_index * sent) % len(rows)
        converted = workdir / f"prompts-{level_index}.jsonl"
        converted.write_text("".join(json.dumps({"prompt": row["prompt"], "output_tokens_count": row["output_tokens"]})
                                     + "\n" for row in rows[offset:] + rows[:offset]))
        return {"kind": "json_file", "path": str(converted)}
    spec: dict[str, Any] = {"kind": "synthetic_text", **_lengths("prompt_tokens", request.prompt_tokens),
                            **_lengths("output_tokens", request.output_tokens)}
    if request.shared_prefix_tokens:
        spec["prefix_buckets"] = [{"prefix_tokens": request.shared_prefix_tokens, "prefix_count": 1}]
    return spec


def scenario_spec(request: LoadRequest, workdir: Path, levels: list[float], level_index: int = 0,
                  report: str = REPORT) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """GuideLLM's scenario for `levels` and one override per level."""
    if request.profile == "concurrency":
        profile: dict[str, Any] = {"kind": "concurrent", "streams": int(levels[0])}
        overrides = [{"profile.streams": int(level)} for level in levels]
    else:
        profile = {"kind": request.arrivals, "rate": levels[0]}  # Poisson arrivals draw from the run's seed
        overrides = [{"profile.rate": level} for level in levels]
    # Warm-up is ours (`records`): GuideLLM's own excludes requests by when they finish, which in
    # rate mode left a fraction of a level measured. Each level sends its warm-up on top.
    counts = [request.requests_per_level + warmup_count(request, level) for level in levels]
    spec = {
        # timeout: no byte for this long ends a request (httpx's read timeout: a hung request ends there);
        # no /health check between levels, which would crash the run and lose the levels already measured
        "backend": {"kind": "openai_http", "target": request.base_url, "api_key": request.api_key,
                    "model": request.served_model, "timeout": request.request_timeout_s, "validate_backend": False,
                    "request_format": "/v1/chat/completions" if request.api == "chat" else "/v1/completions"},
        "tokenizer": {"kind": "huggingface_auto", "model": request.tokenizer},
        "data": [data_spec(request, workdir, level_index)],
        "data_loader": {"kind": "pytorch", "prefetch_factor": 16},  # the default 4096 burns a core per level
        "profile": profile,
        # a level ends at its request count or its duration; a server answering only errors ends it too
        "constraints": [{"kind": "max_requests", "count": counts[0]},
                        {"kind": "max_duration", "seconds": request.max_seconds_per_level},
                        {"kind": "max_errors", "count": max(request.requests_per_level, 4)}],
        "outputs": [{"kind": "json", "path": str(workdir / report)}],
        "metrics": {"kind": "generative", "sample_size": 0},  # every request's record, without its texts
        "seed": {"kind": "static", "value": request.seed},
    }
    for override, count in zip(overrides, counts):
        override["constraints[0].count"] = count
    return spec, overrides


def error_class(message: str | None, status: str) -> str:
    """What kind of failure a request met, from GuideLLM's error text (httpx exception reprs)."""
    text = message or ""
    if status == "cancelled":  # still open when its level ended (max_duration cancels what is in flight)
        return CANCELLED
    if "Timeout" in text:
        return "timeout"
    if "ConnectError" in text or "RemoteProtocolError" in text or "ReadError" in text:
        return "connection"
    for code in range(400, 600):
        if f"'{code} " in text or f" {code} " in text:
            return "http_4xx" if code < 500 else "http_5xx"
    return "other"


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _record(stats: dict[str, Any], ok: bool) -> RequestRecord:
    info = stats["info"]
    timings = info["timings"]
    start = _first(stats.get("request_start_time"), timings.get("request_start"), info.get("started_at"),
                   timings.get("dequeued"))
    end = _first(stats.get("request_end_time"), timings.get("request_end"), info.get("completed_at"),
                 timings.get("resolve_end"), start)
    if ok:
        return RequestRecord(ok=True, start_s=float(start), end_s=float(end),
                             first_token_s=_first(timings.get("first_output_token_iteration"),
                                                  timings.get("first_token_iteration")),
                             last_token_s=timings.get("last_token_iteration"),
                             prompt_tokens=stats.get("prompt_tokens"), output_tokens=stats.get("output_tokens"))
    return RequestRecord(ok=False, start_s=float(start), end_s=float(end),
                         error_class=error_class(info.get("error"), info.get("status", "")),
                         error=(info.get("error") or info.get("status") or "failed")[:300])


def warmup_count(request: LoadRequest, level: float) -> int:
    """Requests not measured at a level: the first `warmup_requests` of each stream (they start as one
    burst, which steady traffic never sends), or the first `warmup_requests` of a rate level."""
    return request.warmup_requests * (int(level) if request.profile == "concurrency" else 1)


def records(report: dict[str, Any], request: LoadRequest, levels: list[float],
            rounds: list[int]) -> list[LoadLevelRecords]:
    out = []
    for level, round_, benchmark in zip(levels, rounds, report["benchmarks"]):
        requests = benchmark["requests"]
        rows = [_record(r, True) for r in requests["successful"]]
        rows += [_record(r, False) for r in requests["errored"] + requests["incomplete"]]
        rows.sort(key=lambda r: r.start_s)
        skip = warmup_count(request, level)
        rows = [replace(r, warmup=True) for r in rows[:skip]] + rows[skip:]
        timed = [r for r in rows[skip:] if r.error_class != CANCELLED] or rows
        state = benchmark.get("scheduler_state") or {}
        out.append(LoadLevelRecords(level=level, round=round_, closed_loop=request.profile == "concurrency",
                                    window_start_s=min(r.start_s for r in timed) if timed else 0.0,
                                    window_end_s=max(r.end_s for r in timed) if timed else 0.0, requests=rows,
                                    unreported=max(0, int(state.get("created_requests", 0)) - len(rows))))
    return out


@dataclass(frozen=True)
class Benchmark:
    index: int  # position in the whole sweep
    round: int
    level: float


def invocations(request: LoadRequest) -> list[list[Benchmark]]:
    """The sweep's benchmarks grouped by GuideLLM invocation.

    Each pass goes through every level (1, 2, 4, 1, 2, 4): a level's rounds are spread over the run,
    so they see what drifts in it; each benchmark draws new prompts from the seeded generator. One
    invocation for the whole sweep (GuideLLM's start costs ~15 s); one per benchmark with a prompts
    file, which GuideLLM would replay from its first row."""
    plan = [Benchmark(index, round_, level) for index, (round_, level) in
            enumerate((r, lv) for r in range(request.repeats) for lv in request.levels)]
    return [plan] if not request.prompts_file else [[benchmark] for benchmark in plan]


def sweep(request: LoadRequest) -> LoadOutput:
    # GuideLLM is imported here, not at the top: its worker processes are spawned and re-import this module.
    from guidellm.benchmark import benchmark_generative_text
    from guidellm.schemas.benchmark import BenchmarkScenario

    started = time.monotonic()
    workdir = Path(request.out)
    runs = invocations(request)
    levels: list[LoadLevelRecords] = []
    for run in runs:
        first = run[0].index
        name = REPORT if len(runs) == 1 else f"guidellm-{first}.json"
        run_levels, run_rounds = [b.level for b in run], [b.round for b in run]
        spec, overrides = scenario_spec(request, workdir, run_levels, first, name)
        scenario = BenchmarkScenario.create(scenario=None, spec=spec, benchmarks=overrides)
        asyncio.run(benchmark_generative_text(args=scenario, progress=False, console=None))
        levels += records(json.loads((workdir / name).read_text()), request, run_levels, run_rounds)
    return LoadOutput(levels=levels, generator=f"guidellm=={metadata.version('guidellm')}",
                      seconds=round(time.monotonic() - started, 1))


if __name__ == "__main__":
    serve(sweep)
