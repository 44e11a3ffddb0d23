"""Capacity and cost at the SLO: the highest load level a replica serves within every objective, the
replicas the recipe's target QPS needs, and $ per 1M output tokens there, each with its interval.

A variant that meets no level has no capacity and no cost: it fails the SLO gate with the reason of
its lightest level. Memory decides how many accelerators one replica needs: the weights plus the KV
cache of every sequence the server holds at its full context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.measure.latency import Interval, LevelVerdict, by_level, judge, summarize
from pipeline.recipe.traffic import SLO, Hardware, LoadConfig
from pipeline.workers.messages import LoadOutput

GIB = 1024**3
KV_BYTES_PER_VALUE = 2  # f16/bf16 KV cache, the default of both engines


@dataclass(frozen=True, kw_only=True)
class MemoryNeed:
    weights_bytes: int
    kv_cache_bytes: int  # K and V for every layer at `context_tokens` × `sequences`
    context_tokens: int
    sequences: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes


def memory_need(weights_bytes: int, num_layers: int, kv_heads: int, head_dim: int, context_tokens: int,
                sequences: int) -> MemoryNeed:
    kv = 2 * num_layers * kv_heads * head_dim * KV_BYTES_PER_VALUE * context_tokens * sequences
    return MemoryNeed(weights_bytes=weights_bytes, kv_cache_bytes=kv, context_tokens=context_tokens,
                      sequences=sequences)


@dataclass(frozen=True, kw_only=True)
class Capacity:
    levels: list[LevelVerdict]  # every load level, lightest first
    slo_level: LevelVerdict | None  # the highest level that meets the SLO, as do all lighter ones
    reason: str
    output_tokens_per_s: Interval | None = None  # per replica at the SLO level
    requests_per_s: Interval | None = None
    memory: MemoryNeed | None = None
    accelerators_per_replica: int | None = None
    replicas: Interval | None = None  # for target_qps × (1 + headroom)
    usd_per_1m_tokens: Interval | None = None
    fleet_usd_per_hour: float | None = None

    @property
    def meets_slo(self) -> bool:
        return self.slo_level is not None and self.usd_per_1m_tokens is not None


def accelerators(hardware: Hardware, memory: MemoryNeed | None) -> tuple[int | None, str | None]:
    """Accelerators one replica needs, or None with the reason it does not fit."""
    if hardware.memory_gib is None or memory is None:
        return hardware.accelerators_per_replica or 1, None
    per_unit = hardware.memory_gib * GIB
    needed = max(1, math.ceil(memory.total_bytes / per_unit))
    if hardware.accelerators_per_replica is not None and needed > hardware.accelerators_per_replica:
        return None, (f"needs {memory.total_bytes / GIB:.2f} GiB (weights {memory.weights_bytes / GIB:.2f} + KV cache"
                      f" {memory.kv_cache_bytes / GIB:.2f} for {memory.sequences} × {memory.context_tokens} tokens):"
                      f" more than {hardware.accelerators_per_replica} × {hardware.memory_gib:g} GiB")
    return hardware.accelerators_per_replica or needed, None


def assess(load: LoadOutput, config: LoadConfig, slo: SLO, hardware: Hardware, memory: MemoryNeed | None,
           confidence: float = 0.95) -> Capacity:
    rounds_per_level = by_level(load.levels)
    levels = [judge(rounds, config.level_name(rounds[0].level), slo.percentile, slo.limits(), slo.max_error_rate,
                    confidence) for rounds in rounds_per_level]
    if not levels:
        return Capacity(levels=[], slo_level=None, reason="no load level was measured")
    met = None
    for verdict in levels:
        if not verdict.met:
            break
        met = verdict
    if met is None:
        return Capacity(levels=levels, slo_level=None, reason=f"no load level meets the SLO ({levels[0].reason})")
    units, too_big = accelerators(hardware, memory)
    if units is None:
        return Capacity(levels=levels, slo_level=met, memory=memory, reason=f"does not fit a replica: {too_big}")
    summary = summarize(next(rounds for rounds in rounds_per_level if rounds[0].level == met.level), met.label,
                        confidence)
    rps, tps = summary.requests_per_s, summary.output_tokens_per_s
    if rps.estimate <= 0 or tps.estimate <= 0:
        return Capacity(levels=levels, slo_level=met, memory=memory,
                        reason=f"no output at {met.label}: no throughput to price")
    needed = hardware.target_qps * (1 + hardware.headroom)

    def replicas_at(rate: float | None) -> float | None:
        return None if rate is None or rate <= 0 else float(math.ceil(needed / rate))

    replicas = Interval(replicas_at(rps.estimate) or math.inf, replicas_at(rps.high), replicas_at(rps.low))
    replica_usd_per_hour = units * hardware.usd_per_hour
    cost = tps.reciprocal(replica_usd_per_hour / 3600 * 1e6)
    unconfident = [o.metric for o in met.objectives if not o.confident]
    how_sure = ("every objective holds at its upper confidence bound" if not unconfident else
                f"{', '.join(unconfident)} hold on the point estimate only (the {confidence:.0%} bound is above the"
                " limit or cannot be bounded with this many requests)")
    return Capacity(
        levels=levels, slo_level=met, output_tokens_per_s=tps, requests_per_s=rps, memory=memory,
        accelerators_per_replica=units, replicas=replicas, usd_per_1m_tokens=cost,
        fleet_usd_per_hour=round(replicas.estimate * replica_usd_per_hour, 4) if math.isfinite(replicas.estimate)
        else None,
        reason=f"SLO met up to {met.label} ({met.reason.split(': ', 1)[1]}; {how_sure})",
    )
