"""Paired statistics for the quality gate, on synthetic per-item data with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.measure.stats import PairedComparison, flips, informative, mcnemar_exact, paired_drop
from pipeline.promote import TaskItems, VariantEvidence, decide
from pipeline.recipe.schema import Gates
from tests.unit.test_promote import capacity
from tests.unit.paired_items import flipped


def items(n_right: int, n: int) -> list[int]:
    """n items, the first n_right answered right."""
    return [1] * n_right + [0] * (n - n_right)


def test_helpers_build_the_flips_they_say():
    ref = items(80, 100)
    assert flips(ref, flipped(ref, 3, 2)) == (3, 2)


# --- flips and McNemar -------------------------------------------------------------------------------------------


def test_flips_counts_each_direction():
    assert flips([1, 1, 0, 0, 1], [1, 0, 1, 0, 0]) == (2, 1)
    assert flips([1, 0, 1], [1, 0, 1]) == (0, 0)
    assert flips([0, 0], [1, 1]) == (0, 2)


@pytest.mark.parametrize("r2w, w2r, p", [
    (0, 0, 1.0),            # no discordant pairs: no evidence of a difference
    (5, 0, 2 / 32),         # 2 * P(X <= 0), X ~ Bin(5, 1/2) = 2 * 1/32
    (0, 5, 2 / 32),         # two-sided: symmetric
    (10, 10, 1.0),          # perfectly balanced; 2 * P(X <= 10) > 1 is capped at 1
    (7, 1, 18 / 256),       # 2 * (C(8,0) + C(8,1)) / 2^8 = 2 * 9/256
    (3, 0, 0.25),           # 2 * 1/8
    (6, 2, 2 * 37 / 256),   # 2 * (1 + 8 + 28) / 256
])
def test_mcnemar_exact_matches_hand_computed_values(r2w, w2r, p):
    assert mcnemar_exact(r2w, w2r) == pytest.approx(p, abs=1e-12)


# --- paired bootstrap ----------------------------------------------------------------------------------------------


def test_identical_lists_have_zero_drop_and_bound():
    ref = items(70, 100)
    c = paired_drop(ref, list(ref), iters=500)
    assert isinstance(c, PairedComparison)
    assert c.n == 100
    assert c.reference_score == c.variant_score == pytest.approx(0.70)
    assert c.drop == 0.0 and c.drop_upper == 0.0
    assert (c.right_to_wrong, c.wrong_to_right) == (0, 0)
    assert c.mcnemar_p == 1.0


def test_clear_loss():
    ref = items(480, 600)
    var = flipped(ref, r2w=60, w2r=4)
    c = paired_drop(ref, var, iters=2000)
    assert c.drop == pytest.approx(56 / 600, abs=1e-12)
    assert c.reference_score == pytest.approx(480 / 600)
    assert c.variant_score == pytest.approx(424 / 600)
    assert (c.right_to_wrong, c.wrong_to_right) == (60, 4)
    assert c.drop_upper > c.drop
    # sd of per-item diffs ~ sqrt(64/600 - (56/600)^2) ~ 0.313; se ~ 0.0128: the 95% bound is ~ 2 se above.
    assert c.drop_upper == pytest.approx(56 / 600 + 1.645 * 0.313 / math.sqrt(600), abs=0.004)
    assert c.mcnemar_p < 1e-10


def test_variant_better_than_reference_has_a_negative_drop():
    ref = items(80, 200)
    c = paired_drop(ref, flipped(ref, w2r=30), iters=2000)
    assert c.drop == pytest.approx(-30 / 200)
    assert c.drop_upper < 0


def test_small_n_is_not_enough_evidence_but_large_n_is():
    tolerance = 0.02
    small_ref = items(80, 100)
    small = paired_drop(small_ref, flipped(small_ref, r2w=3, w2r=2), iters=2000)
    assert small.drop == pytest.approx(0.01)
    assert small.drop <= tolerance < small.drop_upper  # within on the point, not on the 95% bound

    big_ref = items(16_000, 20_000)
    big = paired_drop(big_ref, flipped(big_ref, r2w=600, w2r=400), iters=2000)
    assert big.drop == pytest.approx(0.01)  # same flip rates
    assert big.drop < big.drop_upper <= tolerance
    assert big.drop_upper < small.drop_upper


def test_bootstrap_bound_agrees_with_the_normal_approximation():
    n = 2000
    ref = items(1600, n)
    var = flipped(ref, r2w=100, w2r=60)
    diffs = np.asarray(ref, dtype=float) - np.asarray(var, dtype=float)
    normal_upper = diffs.mean() + 1.645 * diffs.std(ddof=1) / math.sqrt(n)  # ~0.0304
    c = paired_drop(ref, var, confidence=0.95, iters=4000)
    assert c.drop == pytest.approx(0.02)
    # 0.0015 separates the 95% one-sided bound from the 97.5% (~0.0324) and 90% (~0.0281) ones.
    assert c.drop_upper == pytest.approx(normal_upper, abs=0.0015)


def test_higher_confidence_gives_a_higher_bound():
    ref = items(400, 500)
    var = flipped(ref, r2w=20, w2r=10)
    low = paired_drop(ref, var, confidence=0.80, iters=2000)
    high = paired_drop(ref, var, confidence=0.99, iters=2000)
    assert low.drop == high.drop
    assert low.drop_upper < high.drop_upper
    assert high.confidence == 0.99


def test_same_seed_same_result():
    ref = items(300, 400)
    var = flipped(ref, r2w=15, w2r=9)
    assert paired_drop(ref, var, iters=500, seed=3) == paired_drop(ref, var, iters=500, seed=3)
    assert paired_drop(ref, var, iters=500) == paired_drop(ref, var, iters=500)


def test_the_seed_is_used():
    ref = items(300, 400)
    var = flipped(ref, r2w=15, w2r=9)
    bounds = {paired_drop(ref, var, confidence=0.9, iters=300, seed=s).drop_upper for s in range(8)}
    assert len(bounds) > 1


@pytest.mark.parametrize("reference, variant", [
    ([1, 0, 1], [1, 0]),
    ([1], [1, 0]),
    ([], []),
    ([], [1]),
], ids=["variant-shorter", "reference-shorter", "both-empty", "reference-empty"])
def test_mismatched_or_empty_lists_are_rejected(reference, variant):
    with pytest.raises(ValueError):
        paired_drop(reference, variant, iters=100)


# --- end to end through the promotion rule ------------------------------------------------------------------------


def _decide(n_right: int, n: int, r2w: int, w2r: int):
    ref = items(n_right, n)
    evidence = [
        VariantEvidence(name="f16", engine="llamacpp", is_reference=True, tasks={"t": TaskItems(metric="acc", values=ref)}, alignment_passed=True,
                        eval_error=None, capacity=capacity(10.0),
                        parity={"mean_abs_diff": 0.01, "limit": 0.1, "n": 255}),
        VariantEvidence(name="q4", engine="llamacpp", is_reference=False, tasks={"t": TaskItems(metric="acc", values=flipped(ref, r2w, w2r))},
                        alignment_passed=True, eval_error=None, capacity=capacity(50.0)),
    ]
    gates = Gates(max_accuracy_drop=0.02, bootstrap_iters=1000)
    return decide(evidence, ["t"], gates)


def test_promotion_needs_enough_evidence_not_just_a_small_point_drop():
    small = _decide(80, 100, r2w=3, w2r=2)
    q4 = small.verdict("q4")
    assert not q4.passed and small.winner == "f16"
    assert len(q4.reasons) == 1 and "not enough evidence" in q4.reasons[0]
    assert "3 right→wrong, 2 wrong→right of 100" in q4.reasons[0]
    assert q4.comparisons["t"].drop_upper > 0.02

    big = _decide(16_000, 20_000, r2w=600, w2r=400)
    q4 = big.verdict("q4")
    assert q4.passed and big.winner == "q4"
    assert q4.comparisons["t"].drop_upper <= 0.02


# --- can a task tell variants apart? ------------------------------------------------------------------------------


def test_a_reference_answering_one_option_on_a_balanced_task_is_uninformative():
    """The case seen with a real benchmark: reference at exactly 0.500, always the same answer."""
    gold = [0, 1] * 300
    always_a = [0] * 600
    values = [float(g == c) for g, c in zip(gold, always_a)]
    verdict = informative(values, tolerance=0.02, confidence=0.95, gold=gold, choice=always_a, n_choices=[2] * 600)
    assert not verdict.informative and verdict.floor == 0.5 and verdict.reference_score == 0.5
    assert "answers option 0 for 100% of items" in verdict.reason


def test_the_majority_class_rate_is_the_floor_when_it_beats_chance():
    gold = [0] * 480 + [1] * 120  # 80% of items have option 0 right
    always_a = [0] * 600
    values = [float(g == c) for g, c in zip(gold, always_a)]
    verdict = informative(values, 0.02, 0.95, gold=gold, choice=always_a, n_choices=[2] * 600)
    assert verdict.floor == 0.8 and verdict.reference_score == 0.8 and not verdict.informative


def test_a_reference_well_above_its_floor_is_informative():
    gold = [0, 1] * 300
    choice = [g if i % 12 else 1 - g for i, g in enumerate(gold)]  # 92% right, answers follow the input
    values = [float(g == c) for g, c in zip(gold, choice)]
    verdict = informative(values, 0.02, 0.95, gold=gold, choice=choice, n_choices=[2] * 600)
    assert verdict.informative and verdict.p_value < 1e-10


def test_just_above_the_floor_is_not_enough_when_a_tolerance_drop_could_not_show():
    """A generated-answer task (floor 0) where the reference gets 2%: a variant falling to 0 would
    be a drop of 0.02, never more than the tolerance, so the task cannot fail anything."""
    values = [1.0] * 12 + [0.0] * 588
    assert not informative(values, tolerance=0.02, confidence=0.95).informative
    assert informative([1.0] * 120 + [0.0] * 480, tolerance=0.02, confidence=0.95).informative


def test_continuous_scores_are_tested_on_their_mean():
    rng = np.random.default_rng(0)
    high = list(rng.uniform(0.5, 0.9, 300))
    low = list(rng.uniform(0.0, 0.03, 300))
    assert informative(high, 0.02, 0.95).informative
    assert not informative(low, 0.02, 0.95).informative


def test_continuous_metrics_get_a_bound_but_no_flips():
    rng = np.random.default_rng(1)
    reference = list(rng.uniform(0.4, 0.9, 400))
    variant = [v - 0.05 + rng.normal(0, 0.02) for v in reference]
    c = paired_drop(reference, variant, iters=2000)
    assert c.right_to_wrong is None and c.mcnemar_p is None
    assert 0.045 < c.drop < 0.055 and c.drop < c.drop_upper < c.drop + 0.01
