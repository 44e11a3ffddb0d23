"""Cheapest-first search: the variants it evaluates, the ones it leaves out and why, and that the
decision (`promote.decide`, the real rule) is the exhaustive search's on random fields of variants.

`evaluate` here stands for measuring a variant in full: it returns that variant's real verdict from
its evidence, and records the order the search asked for them in (the search's own logic).
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from pipeline.measure.latency import Interval
from pipeline.promote import VariantEvidence, decide, price
from pipeline.recipe.traffic import Promotion
from pipeline.search import SKIPPED, Priced, cheapest_first
from tests.unit.test_promote import TASKS, capacity, ev, make_gates


GATES = make_gates(bootstrap_iters=200)  # the same gates on both sides: fewer resamples only save time


def cost(estimate: float, half_width: float = 0.01) -> Interval:
    return Interval(estimate, estimate - half_width, estimate + half_width)


class Recorder:
    """`evaluate` for the search: answers from a table and keeps the order it was asked in."""

    def __init__(self, passes: dict[str, bool]):
        self.passes, self.asked = passes, []

    def __call__(self, name: str) -> bool:
        self.asked.append(name)
        return self.passes[name]


def test_evaluates_from_the_cheapest_and_leaves_out_what_lies_wholly_above_a_pass():
    candidates = [Priced("q8", cost(0.50)), Priced("q2", cost(0.20)), Priced("q4", cost(0.30)),
                  Priced("q6", cost(0.40))]
    evaluate = Recorder({"q2": False, "q4": True, "q6": True, "q8": True})
    skipped = cheapest_first(candidates, [], evaluate)
    assert evaluate.asked == ["q2", "q4"]  # q2 failed, so q4 had to be measured; q4 passed
    assert set(skipped) == {"q6", "q8"}
    assert skipped["q6"] == (f"{SKIPPED}: q4 passed at $0.3000 [0.2900–0.3100] per 1M output tokens and this"
                             " variant's $0.4000 [0.3900–0.4100] lies wholly above it")


def test_a_costlier_variant_whose_interval_overlaps_the_pass_is_evaluated():
    """It may be tied with the cheapest pass on cost, and the tie-break may choose it."""
    candidates = [Priced("q4", cost(0.30, 0.05)), Priced("q6", cost(0.34, 0.05)), Priced("q8", cost(0.50))]
    evaluate = Recorder({"q4": True, "q6": False, "q8": True})
    assert set(cheapest_first(candidates, [], evaluate)) == {"q8"}
    assert evaluate.asked == ["q4", "q6"]
    unbounded = [Priced("q4", cost(0.30)), Priced("q8", Interval(0.90, 0.2, None))]
    evaluate = Recorder({"q4": True, "q8": True})
    assert cheapest_first(unbounded, [], evaluate) == {} and evaluate.asked == ["q4", "q8"]


def test_a_variant_failing_its_load_checks_is_never_evaluated():
    evaluate = Recorder({"q4": True, "q2": True})
    skipped = cheapest_first([Priced("q2", None), Priced("q4", cost(0.3))], [], evaluate)
    assert evaluate.asked == ["q4"] and skipped == {"q2": f"{SKIPPED}: it fails its load checks, so it cannot pass"}


def test_a_passing_reference_bounds_the_search_from_the_start():
    evaluate = Recorder({"q4": True, "q8": True})
    skipped = cheapest_first([Priced("q4", cost(0.30)), Priced("q8", cost(0.80))], [Priced("f16", cost(0.60))],
                             evaluate)
    assert evaluate.asked == ["q4"] and set(skipped) == {"q8"} and "q4 passed at $0.3000" in skipped["q8"]
    evaluate = Recorder({"q4": False, "q8": True})
    skipped = cheapest_first([Priced("q4", cost(0.30)), Priced("q8", cost(0.80))], [Priced("f16", cost(0.60))],
                             evaluate)
    assert evaluate.asked == ["q4"] and "f16 passed at $0.6000" in skipped["q8"]


def test_a_variant_measured_already_is_evaluated_whatever_its_cost():
    evaluate = Recorder({"q4": True, "q8": True, "q6": True})
    skipped = cheapest_first([Priced("q4", cost(0.30)), Priced("q8", cost(0.80), measured=True),
                              Priced("q6", cost(0.60))], [], evaluate)
    assert evaluate.asked == ["q4", "q8"] and set(skipped) == {"q6"}


def _field(rng: random.Random) -> list[VariantEvidence]:
    """A reference and 2–7 variants with random speeds, cost spreads, quality losses and SLO misses."""
    field = [ev("f16", reference=True, capacity=capacity(rng.choice([15.0, 30.0, 60.0]), spread=rng.choice([0.01, 0.05]),
                                                         met=rng.random() > 0.3))]
    for i in range(rng.randint(2, 7)):
        tok_s = rng.choice([20.0, 30.0, 31.0, 40.0, 42.0, 50.0, 80.0])
        spread = rng.choice([0.0, 0.02, 0.05, 0.2])
        field.append(ev(f"v{i}", r2w=rng.choice([0, 2, 5, 40]), w2r=rng.choice([0, 1, 3]),
                        capacity=capacity(tok_s, spread=spread, met=rng.random() > 0.2), size_bytes=rng.randint(1, 9)))
    return field


@pytest.mark.parametrize("tie_break", ["quality", "size"])
def test_the_decision_is_the_exhaustive_one_on_random_fields(tie_break):
    promotion = Promotion(cost_tie_break=tie_break)
    rng = random.Random(7)
    left_out = tied = 0
    for _ in range(40):
        field = _field(rng)
        reference, variants = field[0], field[1:]
        exhaustive = decide(field, TASKS, GATES, promotion)

        def priced(evidence: VariantEvidence) -> Priced:
            checks, usd = price(evidence)
            return Priced(evidence.name, usd if all(c.passed for c in checks) else None)

        by_name = {e.name: e for e in variants}
        passed = [priced(reference)] if decide([reference], TASKS, GATES, promotion).verdicts[0].passed else []
        evaluate = Recorder({name: decide([reference, e], TASKS, GATES, promotion).verdict(name).passed
                             for name, e in by_name.items()})
        skipped = cheapest_first([priced(e) for e in variants], passed, evaluate)
        assert set(skipped) | set(evaluate.asked) == set(by_name) and not set(skipped) & set(evaluate.asked)
        searched = decide([reference, *(replace(e, skipped=skipped[e.name]) if e.name in skipped else e
                                        for e in variants)], TASKS, GATES, promotion)
        assert (searched.winner, searched.tied) == (exhaustive.winner, exhaustive.tied)
        for name in skipped:  # left out: it would not have passed, or it is not the winner nor in the tie
            assert not searched.verdict(name).passed and searched.verdict(name).reasons[0].startswith(SKIPPED)
            assert name != exhaustive.winner and name not in exhaustive.tied
        left_out += len(skipped)
        tied += len(exhaustive.tied) > 1
    assert left_out >= 60 and tied >= 5  # the fields leave work out and hold ties, or the checks above prove little
