"""Statistics of one load level from its per-request records: latency percentiles and throughput,
each with a confidence interval, errors by class, and whether an SLO holds there.

Percentile intervals are distribution-free (order statistics and the binomial, as in any
statistics text): the p95 of 24 requests has no finite upper bound at 95% confidence, and the
summary says so instead of inventing one. Throughput is the tokens each request produced per second
of its own latency, resampled over requests (scipy's bootstrap), times the mean number of requests
in flight during the measured window (Little's law).

Those intervals resample the requests of one pass; they do not see what changes between passes (a
busy neighbour on a shared host, the phase pattern streams lock into). With `load.repeats` of 2 or
more, each level is measured in several rounds spread over the run, and every interval is widened to
hold the t-interval over the rounds' own estimates too (independent replications, as in any
simulation-output text).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pipeline.measure.stats import scipy_stats
from pipeline.workers.messages import CANCELLED, LoadLevelRecords, RequestRecord

QUANTILES = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99}
METRICS = ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms")
BOOTSTRAP_RESAMPLES = 2000




@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float | None  # None: the sample is too small to bound it on this side
    high: float | None

    def covers(self, value: float) -> bool:
        return (self.low is None or self.low <= value) and (self.high is None or value <= self.high)

    def overlaps(self, other: "Interval") -> bool:
        below = self.high is not None and other.low is not None and self.high < other.low
        above = self.low is not None and other.high is not None and other.high < self.low
        return not (below or above)

    def reciprocal(self, factor: float) -> "Interval":
        """The interval of `factor / x` for a positive factor (a cost from a throughput)."""
        def inv(x: float | None) -> float | None:
            return None if x is None or x <= 0 else factor / x
        return Interval(factor / self.estimate if self.estimate > 0 else math.inf, inv(self.high), inv(self.low))


@dataclass(frozen=True, kw_only=True)
class LevelSummary:
    level: float
    label: str
    rounds: int = 1  # passes through the sweep this level was measured in
    measured: int  # requests whose start fell in the measured window
    cancelled: int  # still open when the level hit its time limit (not counted as errors)
    succeeded: int
    errors: dict[str, int]  # error class -> count
    error_rate: float
    duration_s: float
    mean_in_flight: float
    requests_per_s: Interval
    output_tokens_per_s: Interval
    mean_prompt_tokens: float | None
    mean_output_tokens: float | None
    latency_ms: dict[str, dict[str, Interval]]  # metric -> p50/p90/p95/p99 -> interval
    first_error: str | None
    unreported: int = 0  # sent, but the load generator lost their results (not counted anywhere else)


@dataclass(frozen=True, kw_only=True)
class ObjectiveCheck:
    metric: str
    value: Interval | None  # at the SLO's percentile; None: nothing succeeded
    limit: float
    met: bool  # the point estimate is within the limit
    confident: bool  # the interval's upper bound is within the limit too


@dataclass(frozen=True, kw_only=True)
class LevelVerdict:
    level: float
    label: str
    met: bool
    objectives: list[ObjectiveCheck]
    error_rate: float
    max_error_rate: float
    goodput_rps: float  # requests meeting every objective, per second of the window
    reason: str  # why it is not met, or what holds


def percentile(values: Sequence[float], q: float, confidence: float) -> Interval:
    """The q-quantile (linear interpolation, numpy's default) with its order-statistic interval."""
    ordered = np.sort(np.asarray(values, dtype=float))
    n = len(ordered)
    estimate = float(np.quantile(ordered, q))
    alpha = 1 - confidence
    # Ranks r..s (1-based) bracket the quantile with probability >= confidence: K ~ Binomial(n, q).
    r = int(scipy_stats().binom.ppf(alpha / 2, n, q))
    s = int(scipy_stats().binom.ppf(1 - alpha / 2, n, q)) + 1
    low = float(ordered[r - 1]) if r >= 1 else None
    high = float(ordered[s - 1]) if s <= n else None
    return Interval(estimate, low, high)


def replicated(pooled: Interval, per_round: Sequence[float], confidence: float) -> Interval:
    """`pooled` widened to the t-interval of the mean of the rounds' estimates (one round: unchanged).
    Everything measured here (latency, throughput) is non-negative, so the bound stops at 0."""
    if len(per_round) < 2:
        return pooled
    values = np.asarray(per_round, dtype=float)
    half = float(scipy_stats().t.ppf((1 + confidence) / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    low, high = max(0.0, float(values.mean()) - half), float(values.mean()) + half
    return Interval(pooled.estimate, None if pooled.low is None else min(pooled.low, low, pooled.estimate),
                    None if pooled.high is None else max(pooled.high, high, pooled.estimate))


def percentile_over(rounds: Sequence[Sequence[float]], q: float, confidence: float) -> Interval:
    """The q-quantile of every round's values pooled, its interval holding the spread between rounds."""
    pooled = percentile([v for values in rounds for v in values], q, confidence)
    return replicated(pooled, [float(np.quantile(values, q)) for values in rounds if len(values)], confidence)


def per_request_ms(record: RequestRecord) -> dict[str, float | None]:
    """TTFT, mean ITL, TPOT and end-to-end latency of one successful request, in ms (vLLM's conventions:
    TPOT = (latency - TTFT) / (output tokens - 1); ITL here is the mean gap from first to last token)."""
    ttft = (record.first_token_s - record.start_s) * 1000 if record.first_token_s is not None else None
    e2e = (record.end_s - record.start_s) * 1000
    tokens = record.output_tokens or 0
    tpot = (e2e - ttft) / (tokens - 1) if ttft is not None and tokens > 1 else None
    itl = None
    if record.first_token_s is not None and record.last_token_s is not None and tokens > 1:
        itl = (record.last_token_s - record.first_token_s) * 1000 / (tokens - 1)
    return {"ttft_ms": ttft, "itl_ms": itl, "tpot_ms": tpot, "e2e_ms": e2e}


def _samples(records: Sequence[RequestRecord], metric: str) -> list[float]:
    """Per-request values; for ITL every gap between tokens, pooled (vLLM's ITL), where the generator
    recorded them, else each request's mean gap."""
    ok = [r for r in records if r.ok]
    if metric == "itl_ms" and any(r.itl_s for r in ok):
        return [gap * 1000 for r in ok for gap in r.itl_s]
    return [v for r in ok if (v := per_request_ms(r)[metric]) is not None]


def _ratio_interval(tokens: np.ndarray, seconds: np.ndarray, scale: float, confidence: float, seed: int,
                    bootstrap: bool = True) -> Interval:
    estimate = float(tokens.sum() / seconds.sum() * scale)
    if not bootstrap or len(tokens) < 2 or np.allclose(tokens / seconds, tokens[0] / seconds[0]):
        return Interval(estimate, estimate, estimate)
    result = scipy_stats().bootstrap((tokens, seconds), lambda t, s, axis=-1: t.sum(axis=axis) / s.sum(axis=axis) * scale,
                             paired=True, vectorized=True, confidence_level=confidence, method="percentile",
                             n_resamples=BOOTSTRAP_RESAMPLES, rng=np.random.default_rng(seed))
    return Interval(estimate, float(result.confidence_interval.low), float(result.confidence_interval.high))


def _rescaled(interval: Interval, estimate: float) -> Interval:
    """The same relative interval around another point estimate."""
    factor = estimate / interval.estimate if interval.estimate else 0.0
    return Interval(estimate, interval.low * factor if interval.low is not None else None,
                    interval.high * factor if interval.high is not None else None)


def measured(level: LoadLevelRecords) -> list[RequestRecord]:
    """The level's requests less the warm-up and those the load generator cancelled when the level
    reached its time limit."""
    return [r for r in level.requests if not r.warmup and r.error_class != CANCELLED]


def cancelled(level: LoadLevelRecords) -> int:
    return sum(r.error_class == CANCELLED for r in level.requests)


def by_level(levels: Sequence[LoadLevelRecords]) -> list[list[LoadLevelRecords]]:
    """The sweep's records grouped per load level, lightest first, each level's rounds in order."""
    grouped: dict[float, list[LoadLevelRecords]] = {}
    for level in sorted(levels, key=lambda lv: (lv.level, lv.round)):
        grouped.setdefault(level.level, []).append(level)
    return list(grouped.values())


def _duration(level: LoadLevelRecords) -> float:
    return max(level.window_end_s - level.window_start_s, 1e-9)


def _busy_seconds(level: LoadLevelRecords) -> float:
    """Request-seconds in flight during the measured window (a warm-up request still running holds a
    slot too)."""
    return sum(max(0.0, min(r.end_s, level.window_end_s) - max(r.start_s, level.window_start_s))
               for r in level.requests)


def _throughput(rounds: Sequence[LoadLevelRecords], confidence: float, seed: int,
                bootstrap: bool = True) -> tuple[Interval, Interval]:
    """Output tokens/s and requests/s over the rounds' measured windows together (without
    `bootstrap`, the point estimates only)."""
    ok = [r for level in rounds for r in measured(level) if r.ok]
    if not ok:
        return Interval(0.0, 0.0, 0.0), Interval(0.0, 0.0, 0.0)
    duration = sum(_duration(level) for level in rounds)
    in_flight = sum(_busy_seconds(level) for level in rounds) / duration
    seconds = np.array([r.end_s - r.start_s for r in ok], dtype=float)
    tokens = np.array([r.output_tokens or 0 for r in ok], dtype=float)
    output_tps = _ratio_interval(tokens, seconds, in_flight, confidence, seed, bootstrap)
    requests_ps = _ratio_interval(np.ones_like(seconds), seconds, in_flight, confidence, seed, bootstrap)
    if not rounds[0].closed_loop:
        # Arrivals do not wait for completions: what completed per second of the window is the
        # throughput (Little's law needs a steady state a saturated queue never reaches).
        output_tps = _rescaled(output_tps, float(tokens.sum()) / duration)
        requests_ps = _rescaled(requests_ps, len(ok) / duration)
    return output_tps, requests_ps


def summarize(rounds: Sequence[LoadLevelRecords], label: str, confidence: float = 0.95, seed: int = 0,
              slo_percentile: float | None = None) -> LevelSummary:
    """The figures of one level from its rounds (one per pass through the sweep); `slo_percentile`
    (e.g. 97.5) is added to p50/p90/p95/p99 when it is not one."""
    quantiles = dict(QUANTILES)
    if slo_percentile is not None:
        quantiles[f"p{slo_percentile:g}"] = slo_percentile / 100
    records = [r for level in rounds for r in measured(level)]
    ok = [r for r in records if r.ok]
    errors: dict[str, int] = {}
    for r in records:
        if not r.ok:
            errors[r.error_class or "other"] = errors.get(r.error_class or "other", 0) + 1
    duration = sum(_duration(level) for level in rounds)
    output_tps, requests_ps = _throughput(rounds, confidence, seed)
    if len(rounds) > 1:
        per_round = [_throughput([level], confidence, seed, bootstrap=False) for level in rounds]
        output_tps = replicated(output_tps, [tps.estimate for tps, _ in per_round], confidence)
        requests_ps = replicated(requests_ps, [rps.estimate for _, rps in per_round], confidence)
    latency: dict[str, dict[str, Interval]] = {}
    for metric in METRICS:
        values = [_samples(measured(level), metric) for level in rounds]
        if any(values):
            latency[metric] = {name: percentile_over(values, q, confidence) for name, q in quantiles.items()}
    prompts = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
    return LevelSummary(
        level=rounds[0].level, label=label, rounds=len(rounds), measured=len(records),
        cancelled=sum(cancelled(level) for level in rounds), unreported=sum(level.unreported for level in rounds),
        succeeded=len(ok), errors=errors,
        error_rate=round(1 - len(ok) / len(records), 4) if records else 1.0, duration_s=round(duration, 3),
        mean_in_flight=round(sum(_busy_seconds(level) for level in rounds) / duration, 3),
        requests_per_s=requests_ps, output_tokens_per_s=output_tps,
        mean_prompt_tokens=round(float(np.mean(prompts)), 1) if prompts else None,
        mean_output_tokens=round(float(np.mean([r.output_tokens or 0 for r in ok])), 2) if ok else None,
        latency_ms=latency, first_error=next((r.error for r in records if not r.ok), None),
    )


def judge(rounds: Sequence[LoadLevelRecords], label: str, percentile_q: float, limits: dict[str, float],
          max_error_rate: float, confidence: float = 0.95) -> LevelVerdict:
    """Whether the SLO holds at this level (all its rounds together): every objective's percentile within
    its limit, errors within the allowed rate. Goodput counts the requests that met every per-request
    objective."""
    records = [r for level in rounds for r in measured(level)]
    ok = [r for r in records if r.ok]
    error_rate = 1 - len(ok) / len(records) if records else 1.0
    objectives = []
    for metric, limit in limits.items():
        values = [_samples(measured(level), metric) for level in rounds]
        value = percentile_over(values, percentile_q / 100, confidence) if any(values) else None
        objectives.append(ObjectiveCheck(
            metric=metric, value=value, limit=limit, met=value is not None and value.estimate <= limit,
            confident=value is not None and value.high is not None and value.high <= limit))
    good = 0
    for r in ok:
        figures = per_request_ms(r)
        if all((figures.get(m) is not None and figures[m] <= limit)  # type: ignore[operator]
               for m, limit in limits.items()):
            good += 1
    duration = sum(_duration(level) for level in rounds)
    met = bool(records) and error_rate <= max_error_rate and all(o.met for o in objectives)
    missed = [f"p{percentile_q:g} {o.metric.removesuffix('_ms').upper()} "
              + (f"{o.value.estimate:.0f} ms > {o.limit:.0f} ms" if o.value else "not measured (no request succeeded)")
              for o in objectives if not o.met]
    if not records:
        reason = f"{label}: no request was measured"
    elif error_rate > max_error_rate:
        reason = f"{label}: error rate {error_rate:.3f} above {max_error_rate}"
    elif missed:
        reason = f"{label}: " + ", ".join(missed)
    else:
        reason = f"{label}: " + (", ".join(f"p{percentile_q:g} {o.metric.removesuffix('_ms').upper()}"
                                           f" {o.value.estimate:.0f} ms ≤ {o.limit:.0f} ms"  # type: ignore[union-attr]
                                           for o in objectives) or "no latency objective set")
    return LevelVerdict(level=rounds[0].level, label=label, met=met, objectives=objectives, error_rate=round(error_rate, 4),
                        max_error_rate=max_error_rate, goodput_rps=round(good / duration, 4), reason=reason)
