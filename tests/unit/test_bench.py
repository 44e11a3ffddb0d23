"""Load-benchmark statistics: percentiles and the summary of a run's request timings."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from pipeline.measure.bench import RequestTiming, make_prompt, percentiles, summarize


@pytest.mark.parametrize("n", [1, 2, 3, 7, 20, 101, 1000])
def test_percentiles_match_numpy_linear(n):
    rng = random.Random(n)
    values = [rng.lognormvariate(-2, 0.7) for _ in range(n)]  # seconds, skewed like latencies
    got = percentiles(values)
    for name, q in (("p50", 50), ("p95", 95), ("p99", 99)):
        assert got[name] == pytest.approx(float(np.percentile(values, q, method="linear")) * 1000, abs=1e-3), name
    assert got["mean"] == pytest.approx(float(np.mean(values)) * 1000, abs=1e-3)


def test_percentiles_do_not_depend_on_input_order():
    values = [0.5, 0.1, 0.9, 0.3, 0.7]
    assert percentiles(values) == percentiles(sorted(values)) == percentiles(values[::-1])


def test_percentiles_scale():
    assert percentiles([1.0, 3.0], scale=1.0) == {"p50": 2.0, "p95": 2.9, "p99": 2.98, "mean": 2.0}


def test_percentiles_of_nothing_are_nan():
    got = percentiles([])
    assert set(got) == {"p50", "p95", "p99", "mean"}
    assert all(math.isnan(v) for v in got.values())


def ok(ttft: float, e2e: float, itl: list[float], tokens: int, prompt: int | None = 100) -> RequestTiming:
    return RequestTiming(True, ttft, e2e, itl, tokens, prompt)


def test_summarize_counts_errors_and_throughput():
    timings = [
        ok(0.2, 1.0, [0.1, 0.1, 0.2], 4),
        RequestTiming(False, error="HTTP 503: busy"),
        ok(0.4, 2.0, [0.3, 0.3], 3, prompt=120),
        RequestTiming(False, error="ReadTimeout: timed out"),
    ]
    result = summarize(timings, duration_s=2.0, concurrency=2)
    assert result.requests == 4 and result.errors == 2 and result.error_rate == 0.5
    assert result.first_error == "HTTP 503: busy"
    assert result.output_tokens_per_s == pytest.approx((4 + 3) / 2.0)
    assert result.requests_per_s == pytest.approx(2 / 2.0)
    assert result.mean_output_tokens == pytest.approx(3.5)
    assert result.mean_prompt_tokens == pytest.approx(110.0)
    assert result.concurrency == 2 and result.duration_s == 2.0


def test_summarize_pools_itl_over_all_requests():
    timings = [ok(0.2, 1.0, [0.01] * 9, 10), ok(0.2, 1.0, [0.5], 2)]
    result = summarize(timings, duration_s=1.0, concurrency=2)
    pooled = [0.01] * 9 + [0.5]
    # Pooled, the one slow gap is the tail; averaging per-request means would give 255 ms.
    assert result.itl_ms["mean"] == pytest.approx(np.mean(pooled) * 1000, abs=1e-3)
    assert result.itl_ms["p95"] == pytest.approx(np.percentile(pooled, 95) * 1000, abs=1e-3)
    assert result.itl_ms["p50"] == pytest.approx(10.0, abs=1e-3)


def test_summarize_latencies_come_from_successful_requests():
    timings = [ok(0.1, 1.0, [], 1), ok(0.3, 2.0, [], 1), RequestTiming(False, ttft_s=9.0, e2e_s=9.0, error="x")]
    result = summarize(timings, duration_s=1.0, concurrency=1)
    assert result.ttft_ms["mean"] == pytest.approx(200.0)
    assert result.e2e_ms["p50"] == pytest.approx(1500.0)


def test_summarize_all_failed():
    result = summarize([RequestTiming(False, error="refused")] * 3, duration_s=0.5, concurrency=1)
    assert result.errors == 3 and result.error_rate == 1.0
    assert result.output_tokens_per_s == 0.0
    assert result.mean_prompt_tokens is None
    assert math.isnan(result.ttft_ms["p95"])


def test_summarize_nothing_is_a_full_error():
    result = summarize([], duration_s=0.0, concurrency=1)
    assert result.error_rate == 1.0 and result.output_tokens_per_s == 0.0


def test_prompts_are_deterministic_and_unique():
    assert make_prompt(3, 50) == make_prompt(3, 50)
    prompts = {make_prompt(i, 50) for i in range(-2, 30)}
    assert len(prompts) == 32
    assert len(make_prompt(0, 50).split()) == 50 + 2  # "Request 0." + 50 words
