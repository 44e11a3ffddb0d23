"""Sequential evaluation: looks, their error levels, the score bound, and the gate judged where it stopped.

The promise under test: however the looks go, a variant whose true drop is at or above the tolerance
is promoted no more often than 1 − confidence (simulated gates with planted drops), while clear
outcomes stop early and save items.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from pipeline.measure.sequential import CONTINUE, FAIL, PASS, item_order, look_plan, settle, simulate
from pipeline.measure.stats import paired_binary_upper, paired_drop
from pipeline.promote import TaskItems, VariantEvidence, decide
from pipeline.recipe.schema import EvalsConfig, Gates, SequentialConfig
from tests.unit.test_promote import PARITY_OK, capacity, div

SEQUENTIAL = SequentialConfig(looks=4, interim_share=0.3, min_items_per_look=50)


def test_look_plan_spends_exactly_one_minus_confidence():
    plan = look_plan(400, 4, 0.95, 0.3, 50, 1000)
    assert plan.sizes == [100, 200, 300, 400]
    assert plan.alphas[:3] == pytest.approx([0.005] * 3) and plan.alphas[3] == pytest.approx(0.035)
    assert sum(plan.alphas) == pytest.approx(0.05)


def test_small_tasks_get_fewer_looks_and_tiny_ones_the_fixed_gate():
    assert look_plan(130, 4, 0.95, 0.3, 50, 1000).sizes == [65, 130]
    single = look_plan(60, 4, 0.95, 0.3, 50, 1000)
    assert single.sizes == [60] and single.alphas == pytest.approx([0.05])
    assert look_plan(400, 4, 0.95, 0.0, 50, 1000).alphas == pytest.approx([0, 0, 0, 0.05])


def test_item_order_is_a_seeded_permutation():
    docs = list(range(50))
    order = item_order(docs, "agreement")
    assert sorted(order) == docs and order != docs
    assert item_order(list(reversed(docs)), "agreement") == order  # the doc ids' own order does not matter
    assert item_order(docs, "sentiment") != order


def _multinomial_coverage(n: int, alpha: float, draws: int, seed: int) -> float:
    """How often the bound lies below a true drop of 0.02 (P(r→w) 0.05, P(w→r) 0.03): its error rate."""
    rng = np.random.default_rng(seed)
    misses = 0
    for _ in range(draws):
        r2w, w2r, _ = rng.multinomial(n, [0.05, 0.03, 0.92])
        misses += paired_binary_upper(int(r2w), int(w2r), n, alpha) <= 0.02
    return misses / draws


def test_score_bound_keeps_its_level_where_the_bootstrap_does_not():
    assert _multinomial_coverage(400, 0.05, 4000, seed=11) <= 0.05
    assert _multinomial_coverage(100, 0.005, 4000, seed=12) <= 0.005


def test_score_bound_is_positive_without_flips_and_tightens_with_items():
    few, many = paired_binary_upper(0, 0, 100, 0.05), paired_binary_upper(0, 0, 1000, 0.05)
    assert 0 < many < few < 0.05
    # 1.645² / (n + 1.645²) is the no-flip bound's closed form
    assert few == pytest.approx(1.645 ** 2 / (100 + 1.645 ** 2), rel=0.01)
    # with many flips it agrees with the normal approximation (and the bootstrap)
    ref = [1] * 600 + [0] * 400
    var = [0] * 60 + [1] * 540 + [1] * 20 + [0] * 380
    score = paired_binary_upper(60, 20, 1000, 0.05)
    assert score == pytest.approx(paired_drop(ref, var, 0.95, 4000).drop_upper, abs=0.003)


def _pairs(n: int, r2w: int, w2r: int, seed: int = 0) -> tuple[list[float], list[float]]:
    rng = np.random.default_rng(seed)
    reference = [1.0] * (n // 2) + [0.0] * (n - n // 2)
    variant = list(reference)
    for i in range(r2w):
        variant[i] = 0.0
    for i in range(w2r):
        variant[n // 2 + i] = 1.0
    order = rng.permutation(n)
    return [reference[i] for i in order], [variant[i] for i in order]


def test_a_clear_fail_stops_at_the_first_look():
    plan = look_plan(400, 4, 0.95, 0.3, 50, 1000)
    reference, variant = _pairs(400, r2w=80, w2r=0)
    settled = settle(reference, variant[:100], 0.02, plan)
    assert settled.outcome == FAIL and settled.look == 1 and settled.n == 100 and settled.early
    assert settled.lower is not None and settled.lower > 0.02
    assert "clear fail" in settled.reason


def test_the_last_look_always_settles_and_an_unsettled_one_continues():
    plan = look_plan(400, 4, 0.95, 0.3, 50, 1000)
    reference, variant = _pairs(400, r2w=12, w2r=6)
    first = settle(reference, variant[:100], 0.02, plan)
    assert first.outcome == CONTINUE and first.n == 100 and not first.early
    final = settle(reference, variant, 0.02, plan)
    assert final.outcome in (PASS, FAIL) and final.n == 400 and final.alpha == pytest.approx(0.035)


def test_settle_refuses_items_that_do_not_fit_the_plan():
    plan = look_plan(400, 4, 0.95, 0.3, 50, 1000)
    reference, variant = _pairs(400, 0, 0)
    with pytest.raises(ValueError, match="do not reach the first look"):
        settle(reference, variant[:99], 0.02, plan)
    with pytest.raises(ValueError, match="plan is for 400"):
        settle(reference[:300], variant[:300], 0.02, plan)


@pytest.mark.parametrize("true_drop", [0.02, 0.04])
def test_false_promotions_stay_within_one_minus_confidence(true_drop):
    """1,000 simulated gates with the true drop at, and above, the tolerance."""
    plan = look_plan(400, 4, 0.95, 0.3, 50, 1000)
    summary = simulate(true_drop, 0.02, plan, gates=1000, seed=5)
    assert summary.gates == 1000
    assert summary.pass_rate <= 0.05


def test_a_clearly_worse_variant_saves_most_of_its_items():
    plan = look_plan(400, 4, 0.95, 0.3, 50, 1000)
    summary = simulate(0.15, 0.02, plan, gates=200, seed=6)
    assert summary.passed == 0 and summary.stopped_early >= 190
    assert summary.items_saved >= 0.6  # most stop at the first look (a quarter of the items), the rest soon after


def _evidence(name: str, values: list[float], doc_ids: list[int], reference: bool = False) -> VariantEvidence:
    return VariantEvidence(name=name, engine="llamacpp", is_reference=reference,
                           tasks={"agreement": TaskItems(metric="acc", values=values, doc_ids=doc_ids)},
                           alignment_passed=True, eval_error=None, capacity=capacity(),
                           divergence=div(0.0, 0.0) if reference else div(), parity=PARITY_OK if reference else None)


def _scored(reference: list[float], variant: list[float], order: list[int], n: int) -> VariantEvidence:
    """The variant as the eval worker leaves it after `n` items in look order: sorted by doc id."""
    docs = sorted(order[:n])
    by_doc = dict(zip(order, variant))
    return _evidence("q2", [by_doc[d] for d in docs], docs)


def test_the_gate_judges_a_stopped_variant_at_the_look_it_stopped():
    gates = Gates(max_accuracy_drop=0.02, bootstrap_iters=1000)
    docs = list(range(400))
    order = item_order(docs, "agreement")
    reference, variant = _pairs(400, r2w=80, w2r=0, seed=1)  # values in look order
    ref_by_doc = dict(zip(order, reference))
    ref = _evidence("f16", [ref_by_doc[d] for d in docs], docs, reference=True)
    stopped = _scored(reference, variant, order, 100)
    decision = decide([ref, stopped], ["agreement"], gates, sequential=SEQUENTIAL)
    verdict = decision.verdict("q2")
    check = next(c for c in verdict.checks if c.name == "agreement.drop_upper")
    assert not check.passed and "look 1 of 4, 100 of 400 items" in check.detail
    assert verdict.comparisons["agreement"].n == 100
    # the same items without sequential evaluation are partial: 100 of 400
    fixed = decide([ref, stopped], ["agreement"], gates)
    assert any("missing or partial" in r for r in fixed.verdict("q2").reasons)


def test_items_that_are_not_a_prefix_of_the_look_order_are_partial():
    gates = Gates(max_accuracy_drop=0.02, bootstrap_iters=1000)
    docs = list(range(400))
    ref = _evidence("f16", [1.0] * 200 + [0.0] * 200, docs, reference=True)
    first_hundred = _evidence("q2", [1.0] * 100, docs[:100])  # doc order, not look order
    decision = decide([ref, first_hundred], ["agreement"], gates, sequential=SEQUENTIAL)
    assert any("missing or partial" in r for r in decision.verdict("q2").reasons)


def test_a_variant_scored_on_every_item_gets_the_verdict_it_would_have_stopped_with():
    gates = Gates(max_accuracy_drop=0.02, bootstrap_iters=1000)
    docs = list(range(400))
    order = item_order(docs, "agreement")
    reference, variant = _pairs(400, r2w=80, w2r=0, seed=1)
    ref_by_doc = dict(zip(order, reference))
    ref = _evidence("f16", [ref_by_doc[d] for d in docs], docs, reference=True)
    stopped = decide([ref, _scored(reference, variant, order, 100)], ["agreement"], gates, sequential=SEQUENTIAL)
    every = decide([ref, _scored(reference, variant, order, 400)], ["agreement"], gates, sequential=SEQUENTIAL)
    assert stopped.verdict("q2").checks == every.verdict("q2").checks


def test_recipe_sequential_settings_are_checked():
    config = EvalsConfig(tasks=["agreement"], sequential={"looks": 3})
    assert config.sequential == SequentialConfig(looks=3)
    for bad in ({"looks": 1}, {"interim_share": 1.0}, {"min_items_per_look": 5}, {"look": 3}):
        with pytest.raises(ValidationError):
            EvalsConfig(tasks=["agreement"], sequential=bad)
    assert math.isclose(SequentialConfig().interim_share, 0.3)
