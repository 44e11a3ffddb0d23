"""Capacity and cost at the SLO: the SLO level, replicas for the target QPS, $/1M tokens, memory fit."""

from __future__ import annotations

import pytest

from pipeline.capacity import GIB, assess, memory_need
from pipeline.recipe.traffic import SLO, Hardware, LoadConfig
from pipeline.workers.messages import LoadOutput
from tests.unit.test_latency import closed_loop

CONFIG = LoadConfig(levels=[1, 2, 4])


def sweep(ttft_by_level: dict[int, float], e2e_s: float = 1.0) -> LoadOutput:
    return LoadOutput(levels=[closed_loop(streams, 12, ttft, e2e_s, 20, jitter=0.1, seed=streams)
                              for streams, ttft in ttft_by_level.items()], generator="test", seconds=1.0)


def test_slo_level_is_the_heaviest_that_meets_every_objective():
    load = sweep({1: 0.1, 2: 0.2, 4: 0.6})
    capacity = assess(load, CONFIG, SLO(ttft_ms=400), Hardware(name="vm", usd_per_hour=3.6, target_qps=5), None)
    assert [lv.met for lv in capacity.levels] == [True, True, False]
    assert capacity.slo_level is not None and capacity.slo_level.level == 2
    assert capacity.reason.startswith("SLO met up to 2 streams")
    rps = capacity.requests_per_s
    assert rps.estimate == pytest.approx(2.0, rel=0.1)
    assert capacity.replicas.estimate == pytest.approx(-(-5 * 1.2 // rps.estimate))  # ceil(6 / rps)
    assert capacity.replicas.low <= capacity.replicas.estimate <= capacity.replicas.high
    # $3.6/h spread over the output tokens one replica makes per hour at 2 streams
    tps = capacity.output_tokens_per_s
    assert capacity.usd_per_1m_tokens.estimate == pytest.approx(3.6 / (tps.estimate * 3600) * 1e6)
    assert capacity.usd_per_1m_tokens.low == pytest.approx(3.6 / (tps.high * 3600) * 1e6)
    assert capacity.fleet_usd_per_hour == pytest.approx(capacity.replicas.estimate * 3.6)
    assert capacity.meets_slo


def test_a_lighter_level_that_fails_caps_the_capacity():
    capacity = assess(sweep({1: 0.1, 2: 0.6, 4: 0.2}), CONFIG, SLO(ttft_ms=400), Hardware(name="vm", usd_per_hour=1),
                      None)
    assert capacity.slo_level.level == 1


def test_no_level_meeting_the_slo_means_no_capacity_and_no_cost():
    capacity = assess(sweep({1: 0.5, 2: 0.6}), CONFIG, SLO(ttft_ms=400), Hardware(name="vm", usd_per_hour=1), None)
    assert not capacity.meets_slo and capacity.usd_per_1m_tokens is None
    assert capacity.reason.startswith("no load level meets the SLO (1 stream: p95 TTFT ")
    assert capacity.reason.endswith(" ms > 400 ms)")


def test_kv_cache_and_weights_decide_accelerators_per_replica():
    # 30 layers × 3 KV heads × 64 dims × K and V × 2 bytes = 23,040 bytes per token
    need = memory_need(weights_bytes=2 * GIB, num_layers=30, kv_heads=3, head_dim=64, context_tokens=8192,
                       sequences=64)
    assert need.kv_cache_bytes == 23_040 * 8192 * 64
    load = sweep({1: 0.1})
    auto = assess(load, CONFIG, SLO(ttft_ms=400), Hardware(name="gpu", usd_per_hour=2, memory_gib=8), need)
    assert auto.accelerators_per_replica == 2  # 2 GiB + 11.25 GiB of KV cache over 8 GiB units
    single = assess(load, CONFIG, SLO(ttft_ms=400), Hardware(name="gpu", usd_per_hour=2, memory_gib=8), None)
    assert single.accelerators_per_replica == 1
    assert auto.usd_per_1m_tokens.estimate == pytest.approx(2 * single.usd_per_1m_tokens.estimate)
    fixed = assess(load, CONFIG, SLO(ttft_ms=400),
                   Hardware(name="gpu", usd_per_hour=2, memory_gib=8, accelerators_per_replica=1), need)
    assert not fixed.meets_slo and "does not fit a replica: needs 13.25 GiB" in fixed.reason
