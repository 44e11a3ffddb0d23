"""Per-level load statistics: percentile intervals, throughput, errors by class, SLO verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from dataclasses import replace

from scipy import stats

from pipeline.measure.latency import Interval, by_level, judge, percentile, replicated, summarize
from pipeline.workers.messages import LoadLevelRecords, RequestRecord


def closed_loop(streams: int, per_stream: int, ttft_s: float, e2e_s: float, tokens: int, *, warmup: int = 0,
                jitter: float = 0.0, seed: int = 0, errors: dict[str, int] | None = None) -> LoadLevelRecords:
    """`streams` clients each sending requests back to back, the first `warmup` of each marked warm-up.
    Failed requests (by class) replace the last successful ones."""
    rng = np.random.default_rng(seed)
    requests: list[RequestRecord] = []
    for stream in range(streams):
        clock = 0.0
        for i in range(warmup + per_stream):
            e2e = e2e_s * (1 + jitter * rng.standard_normal()) if jitter else e2e_s
            ttft = min(ttft_s * (1 + jitter * rng.standard_normal()) if jitter else ttft_s, e2e * 0.9)
            gap = (e2e - ttft) / (tokens - 1)
            requests.append(RequestRecord(ok=True, start_s=clock, end_s=clock + e2e, first_token_s=clock + ttft,
                                          last_token_s=clock + e2e, prompt_tokens=128, output_tokens=tokens,
                                          itl_s=[gap] * (tokens - 1), warmup=i < warmup))
            clock += e2e
    for cls, n in (errors or {}).items():
        for _ in range(n):
            index = next(i for i in range(len(requests) - 1, -1, -1) if requests[i].ok)
            r = requests[index]
            requests[index] = RequestRecord(ok=False, start_s=r.start_s, end_s=r.end_s, error_class=cls,
                                            error=f"{cls} happened", warmup=r.warmup)
    timed = [r for r in requests if not r.warmup]
    return LoadLevelRecords(level=streams, closed_loop=True, window_start_s=min(r.start_s for r in timed),
                            window_end_s=max(r.end_s for r in timed), requests=requests)


def test_percentile_interval_is_the_textbook_order_statistics():
    values = np.arange(1, 101, dtype=float)  # x_(k) = k
    median = percentile(values, 0.5, 0.95)
    assert median.estimate == pytest.approx(50.5)
    assert (median.low, median.high) == (40.0, 61.0)  # ranks 40 and 61 for n = 100 (standard tables)


def test_p95_of_24_requests_has_no_upper_bound():
    interval = percentile(np.linspace(100, 330, 24), 0.95, 0.95)
    assert interval.high is None and interval.low is not None
    assert interval.low < interval.estimate


def test_percentile_interval_covers_the_true_quantile_at_its_confidence():
    rng = np.random.default_rng(7)
    true_p90 = -np.log(0.10)  # exponential(1)
    covered = sum(percentile(rng.exponential(size=200), 0.90, 0.95).covers(true_p90) for _ in range(400))
    assert 0.93 <= covered / 400 <= 0.995  # order-statistic intervals are slightly conservative


def test_closed_loop_throughput_follows_littles_law():
    level = closed_loop(streams=4, per_stream=10, ttft_s=0.2, e2e_s=1.0, tokens=20, warmup=1)
    summary = summarize([level], "4 streams")
    assert summary.measured == 40 and summary.succeeded == 40 and summary.errors == {}
    assert summary.mean_in_flight == pytest.approx(4.0, rel=1e-6)
    assert summary.output_tokens_per_s.estimate == pytest.approx(80.0)  # 4 streams × 20 tokens / 1 s
    assert summary.requests_per_s.estimate == pytest.approx(4.0)
    assert summary.latency_ms["ttft_ms"]["p50"].estimate == pytest.approx(200.0)
    assert summary.latency_ms["tpot_ms"]["p50"].estimate == pytest.approx(800 / 19)
    assert summary.latency_ms["itl_ms"]["p99"].estimate == pytest.approx(800 / 19)


def test_warmup_requests_are_not_measured():
    with_warmup = closed_loop(streams=2, per_stream=5, ttft_s=0.1, e2e_s=0.5, tokens=8, warmup=3)
    assert len(with_warmup.requests) == 16
    assert summarize([with_warmup], "2 streams").measured == 10


def test_throughput_interval_brackets_the_estimate_and_narrows_with_more_requests():
    few = summarize([closed_loop(4, 6, 0.2, 1.0, 20, jitter=0.3, seed=1)], "4").output_tokens_per_s
    many = summarize([closed_loop(4, 60, 0.2, 1.0, 20, jitter=0.3, seed=1)], "4").output_tokens_per_s
    for interval in (few, many):
        assert interval.low < interval.estimate < interval.high
    assert many.high - many.low < (few.high - few.low) / 2


def test_errors_are_counted_by_class_and_excluded_from_latency():
    level = closed_loop(2, 10, 0.1, 0.5, 8, errors={"timeout": 2, "http_5xx": 3})
    summary = summarize([level], "2 streams")
    assert summary.errors == {"timeout": 2, "http_5xx": 3}
    assert summary.error_rate == pytest.approx(0.25)
    assert summary.succeeded == 15
    assert summary.first_error in {"timeout happened", "http_5xx happened"}


def test_judge_meets_and_misses_each_objective():
    level = closed_loop(4, 10, 0.2, 1.0, 20)
    assert judge([level], "4", 95, {"ttft_ms": 250, "e2e_ms": 1100}, 0.0).met
    missed = judge([level], "4", 95, {"ttft_ms": 150, "e2e_ms": 1100}, 0.0)
    assert not missed.met
    assert "p95 TTFT 200 ms > 150 ms" in missed.reason
    assert missed.goodput_rps == 0.0
    itl = judge([level], "4", 95, {"itl_ms": 30}, 0.0)
    assert not itl.met and "ITL 42 ms > 30 ms" in itl.reason


def test_goodput_counts_requests_meeting_every_objective():
    level = closed_loop(4, 10, 0.2, 1.0, 20)
    verdict = judge([level], "4", 95, {"ttft_ms": 250}, 0.0)
    assert verdict.goodput_rps == pytest.approx(4.0)


def test_judge_fails_a_level_above_the_error_budget():
    level = closed_loop(2, 10, 0.1, 0.5, 8, errors={"connection": 1})
    assert not judge([level], "2", 95, {"ttft_ms": 1000}, 0.0).met
    assert "error rate 0.050 above 0.0" in judge([level], "2", 95, {"ttft_ms": 1000}, 0.0).reason
    assert judge([level], "2", 95, {"ttft_ms": 1000}, 0.1).met


def test_intervals_overlap_and_invert():
    a, b, c = Interval(10, 8, 12), Interval(13, 11.5, 15), Interval(20, 16, None)
    assert a.overlaps(b) and b.overlaps(a) and not a.overlaps(c) and b.overlaps(Interval(1, None, 11.6))
    cost = Interval(100.0, 80.0, 125.0).reciprocal(1000.0)
    assert (cost.estimate, cost.low, cost.high) == (10.0, 8.0, 12.5)
    assert Interval(100.0, None, 125.0).reciprocal(1000.0).high is None


def open_loop(rate: float, n: int, service_s: float, tokens: int, servers: int = 1) -> LoadLevelRecords:
    """Arrivals every 1/rate s served first come first served by `servers` slots of `service_s` each."""
    free = [0.0] * servers
    requests = []
    for i in range(n):
        arrival = i / rate
        slot = min(range(servers), key=lambda k: free[k])
        begin = max(arrival, free[slot])
        free[slot] = begin + service_s
        requests.append(RequestRecord(ok=True, start_s=arrival, end_s=free[slot], first_token_s=begin + 0.1,
                                      last_token_s=free[slot], output_tokens=tokens))
    return LoadLevelRecords(level=rate, closed_loop=False, window_start_s=0.0,
                            window_end_s=max(r.end_s for r in requests), requests=requests)


def test_an_open_loop_level_counts_what_completed_not_what_queued():
    relaxed = summarize([open_loop(rate=2.0, n=20, service_s=0.4, tokens=10)], "2 req/s")
    assert relaxed.output_tokens_per_s.estimate == pytest.approx(200 / 9.9, rel=0.01)  # 20 × 10 tokens in 9.9 s
    # one slot of 1 s against 2 arrivals/s: the queue grows, the server still makes only 10 tokens/s
    saturated = summarize([open_loop(rate=2.0, n=20, service_s=1.0, tokens=10)], "2 req/s")
    assert saturated.output_tokens_per_s.estimate == pytest.approx(10.0, rel=0.01)
    assert saturated.mean_in_flight > 4  # Little's law on this would claim far more than 10 tokens/s
    assert saturated.latency_ms["ttft_ms"]["p95"].estimate > 5000  # the queue shows in TTFT


def test_cancelled_requests_are_neither_measured_nor_errors():
    level = closed_loop(2, 6, 0.1, 0.5, 8)
    cut = level.requests[-1]
    level.requests[-1] = RequestRecord(ok=False, start_s=cut.start_s, end_s=cut.end_s, error_class="cancelled",
                                       error="Request was cancelled")
    summary = summarize([level], "2 streams")
    assert summary.measured == 11 and summary.cancelled == 1 and summary.errors == {} and summary.error_rate == 0.0


def test_itl_is_each_requests_mean_gap_when_gaps_were_not_recorded():
    level = closed_loop(1, 5, 0.2, 1.2, 11)
    bare = [RequestRecord(ok=True, start_s=r.start_s, end_s=r.end_s, first_token_s=r.first_token_s,
                          last_token_s=r.last_token_s, output_tokens=r.output_tokens) for r in level.requests]
    summary = summarize([LoadLevelRecords(level=1, closed_loop=True, window_start_s=level.window_start_s,
                                         window_end_s=level.window_end_s, requests=bare)], "1")
    assert summary.latency_ms["itl_ms"]["p50"].estimate == pytest.approx(100.0)  # 1 s over 10 gaps


def test_a_warmup_request_still_running_holds_a_slot_in_the_window():
    level = closed_loop(2, 4, 0.1, 1.0, 8, warmup=1)
    # stream 1's warm-up runs long: it overlaps the window, which starts at stream 0's first measured request
    slow = level.requests[5]
    assert slow.warmup
    level.requests[5] = RequestRecord(ok=True, start_s=0.0, end_s=1.5, first_token_s=0.1, last_token_s=1.5,
                                      output_tokens=8, warmup=True)
    summary = summarize([level], "2 streams")
    assert summary.measured == 8
    assert summarize([closed_loop(2, 4, 0.1, 1.0, 8, warmup=1)], "2").mean_in_flight == pytest.approx(2.0)
    assert summary.mean_in_flight == pytest.approx(2.0 + 0.5 / 4)  # its last 0.5 s fall in the 4 s window


def rounds_of(level: float, e2e_by_round: list[float], per_stream: int = 8, jitter: float = 0.1,
              seed: int = 0) -> list[LoadLevelRecords]:
    """One level measured once per pass; each pass's requests take their own time (the host changed)."""
    return [replace(closed_loop(int(level), per_stream, 0.2 * e2e, e2e, 20, jitter=jitter, seed=seed + i), round=i)
            for i, e2e in enumerate(e2e_by_round)]


def test_replicated_interval_is_the_t_interval_over_round_estimates_or_the_pooled_one_if_wider():
    narrow = Interval(12.0, 11.9, 12.1)
    wide = replicated(narrow, [10.0, 12.0, 14.0], 0.95)
    half = stats.t.ppf(0.975, 2) * 2.0 / np.sqrt(3)  # mean 12, sd 2, three rounds
    assert (wide.estimate, wide.low, wide.high) == pytest.approx((12.0, 12 - half, 12 + half))
    assert replicated(Interval(12.0, 1.0, 30.0), [10.0, 12.0, 14.0], 0.95) == Interval(12.0, 1.0, 30.0)
    assert replicated(narrow, [12.5], 0.95) is narrow  # one round: nothing to learn between rounds
    assert replicated(Interval(12.0, 11.0, None), [10.0, 14.0], 0.95).high is None  # unbounded stays unbounded
    assert replicated(Interval(1.0, 0.9, 1.1), [0.1, 1.9], 0.95).low == 0.0  # nothing measured here is negative


def test_rounds_that_disagree_widen_the_level_interval_to_hold_each_of_them():
    rounds = rounds_of(4, [1.0, 1.08, 0.95])  # the host ran 8% slower in pass 2
    alone = [summarize([r], "4").output_tokens_per_s for r in rounds]
    assert not all(a.covers(b.estimate) for a in alone for b in alone)  # one pass's interval misses the others
    together = summarize(rounds, "4 streams")
    assert together.rounds == 3 and together.measured == 3 * 32
    assert all(together.output_tokens_per_s.covers(a.estimate) for a in alone)
    ttft = together.latency_ms["ttft_ms"]["p50"]
    assert all(ttft.covers(summarize([r], "4").latency_ms["ttft_ms"]["p50"].estimate) for r in rounds)


def test_rounds_that_agree_keep_the_pooled_interval():
    same = rounds_of(4, [1.0, 1.0, 1.0], jitter=0.0)
    summary = summarize(same, "4")
    assert summary.output_tokens_per_s == Interval(80.0, 80.0, 80.0)
    assert summary.duration_s == pytest.approx(3 * 8.0) and summary.mean_in_flight == pytest.approx(4.0)


def test_interval_over_rounds_covers_a_drifting_hosts_mean_where_one_pass_does_not():
    """Each pass runs at a speed drawn anew (sd 5%); the pooled request bootstrap alone ignores that."""
    rng = np.random.default_rng(3)
    truth = 4 * 20 / 1.0
    covered_rounds = covered_one_pass = 0
    trials = 60
    for trial in range(trials):
        rounds = rounds_of(4, list(1.0 * (1 + 0.05 * rng.standard_normal(3))), jitter=0.05, seed=10 * trial)
        covered_rounds += summarize(rounds, "4").output_tokens_per_s.covers(truth)
        covered_one_pass += summarize(rounds[:1], "4").output_tokens_per_s.covers(truth)
    assert covered_rounds / trials >= 0.85
    assert covered_one_pass / trials <= 0.6


def test_judge_reads_every_round_and_by_level_groups_them():
    fast, slow = rounds_of(2, [1.0, 1.3], jitter=0.0)
    sweep = [replace(r, level=1.0) for r in rounds_of(1, [0.5, 0.5], jitter=0.0)] + [slow, fast]
    grouped = by_level(sweep)
    assert [[(r.level, r.round) for r in g] for g in grouped] == [[(1, 0), (1, 1)], [(2, 0), (2, 1)]]
    verdict = judge(grouped[1], "2 streams", 95, {"e2e_ms": 1200}, 0.0)
    assert not verdict.met and "p95 E2E 1300 ms > 1200 ms" in verdict.reason  # the slow pass counts
    assert judge([fast], "2 streams", 95, {"e2e_ms": 1200}, 0.0).met
