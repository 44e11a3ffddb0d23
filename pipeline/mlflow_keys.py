"""What a variant's MLflow run holds, under names that are the same for every variant, engine and run,
so MLflow's compare view and charts line variants up with no setup.

Metrics are grouped by what they answer (MLflow draws one chart section per prefix):
`gate/` the verdict, `quality/<task>/` the scores and the drop's bound, `fidelity/` next-token
divergence and engine parity, `size/` and `quantize/` the artifact, `load/` throughput and latency
at the SLO load, `cost/` replicas and $/1M tokens (`_low`/`_high`: the interval's ends), and
`per_level/` one point per load level (MLflow steps, lightest first) for the latency-vs-load charts.
Params carry the variant's settings and the thresholds it was judged by (`gate.*`, `slo.*`).
"""

from __future__ import annotations

import math
from typing import Any

from pipeline.measure.latency import Interval
from pipeline.report import Report, ReportRow

LATENCIES = ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms")
QUANTILES = ("p50", "p90", "p95", "p99")
FIDELITY = ("kld_mean", "kld_p99", "flip_rate", "ppl_ratio", "reference_tail_mass")


def metrics(row: ReportRow) -> dict[str, float]:
    out: dict[str, float] = {"gate/passed": float(row.passed), "gate/promoted": float(row.promoted)}
    for task, score in row.score.items():
        prefix = f"quality/{task}"
        _put(out, f"{prefix}/score", score)
        _put(out, f"{prefix}/delta", row.delta[task])
        _put(out, f"{prefix}/drop_bound", row.delta_upper.get(task))
        _put(out, f"{prefix}/items", row.items.get(task))  # fewer than the reference's: stopped early
        if flips := row.flips.get(task):
            out[f"{prefix}/right_to_wrong"] = flips.right_to_wrong
            out[f"{prefix}/wrong_to_right"] = flips.wrong_to_right
            out[f"{prefix}/mcnemar_p"] = flips.mcnemar_p
    if row.parity:
        _put(out, "fidelity/parity_mean_abs_diff", row.parity.mean_abs_diff)
    if row.divergence:
        for name in FIDELITY:
            _put(out, f"fidelity/{name}", getattr(row.divergence, name))
    for name, value in (("size/file_mb", row.file_mb), ("size/bits_per_weight", row.bits_per_weight),
                        ("quantize/seconds", row.quantize_seconds), ("quantize/peak_rss_mb", row.peak_rss_mb)):
        _put(out, name, value)
    capacity = row.capacity
    if capacity and capacity.slo_level:
        out["load/slo_load"] = capacity.slo_level.level
        out["load/goodput_rps"] = capacity.slo_level.goodput_rps
        at_slo = next(level for level in row.load if level.level == capacity.slo_level.level)
        for metric in LATENCIES:
            for quantile in ("p50", "p95", "p99"):
                if interval := at_slo.latency_ms.get(metric, {}).get(quantile):
                    _put(out, f"load/{metric.removesuffix('_ms')}_{quantile}_ms", interval.estimate)
    if capacity:
        _interval(out, "load/output_tokens_per_s", capacity.output_tokens_per_s)
        _interval(out, "load/requests_per_s", capacity.requests_per_s)
        _interval(out, "cost/replicas", capacity.replicas)
        _interval(out, "cost/usd_per_1m_tokens", capacity.usd_per_1m_tokens)
        _put(out, "cost/accelerators_per_replica", capacity.accelerators_per_replica)
    return out


def series(row: ReportRow) -> dict[str, list[float]]:
    """Per load level, lightest first (MLflow steps): what the latency-vs-load charts plot."""
    out: dict[str, list[float]] = {"per_level/load_level": [lv.level for lv in row.load],
                                   "per_level/output_tokens_per_s": [lv.output_tokens_per_s.estimate for lv in row.load],
                                   "per_level/error_rate": [lv.error_rate for lv in row.load]}
    for metric in LATENCIES:
        for quantile in QUANTILES:
            out[f"per_level/{metric.removesuffix('_ms')}_{quantile}_ms"] = [
                lv.latency_ms[metric][quantile].estimate if metric in lv.latency_ms else math.nan for lv in row.load]
    return out


def params(report: Report) -> dict[str, str]:
    """The thresholds every variant was judged by, and each task's gated metric (params of each child
    run, so the compare view shows them next to the numbers)."""
    out = {name: f"{value:g}" for name, value in report.thresholds.items()}
    out.update({f"quality.{task}.metric": metric for task, metric in report.metrics.items()})
    return out


def tags(row: ReportRow, labels: dict[str, str]) -> dict[str, str]:
    """Engine, method, scheme, bits, verdict and its reasons: what reviewers filter and group by."""
    return {"engine": row.engine, **labels, "verdict": "pass" if row.passed else row.verdict,
            "promoted": str(row.promoted).lower(), "reference": str(row.reference).lower(),
            "reasons": "; ".join(row.reasons)[:5000] or "all checks passed"}


def _put(out: dict[str, float], name: str, value: Any) -> None:
    if value is not None and math.isfinite(float(value)):
        out[name] = float(value)


def _interval(out: dict[str, float], name: str, interval: Interval | None) -> None:
    if interval is None:
        return
    _put(out, name, interval.estimate)
    _put(out, f"{name}_low", interval.low)
    _put(out, f"{name}_high", interval.high)
