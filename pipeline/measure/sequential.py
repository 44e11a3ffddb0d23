"""Sequential evaluation: score a variant's items in looks and stop once the gate's outcome is settled.

A group-sequential design with Bonferroni alpha spending. The gate's false-promotion rate
α = 1 − confidence is split over the looks: the interim looks share `interim_share` of it evenly and
the last look (every item) gets the rest. Each look bounds the drop one-sided at its own level: with
Tango's score bound for right/wrong items (the percentile bootstrap undercovers with few flips: 5.9%
false passes at a nominal 5% on 400 items, `make bench-gates`), with the paired bootstrap for
continuous scores. A variant passes at a look when the drop's upper bound is within tolerance there, so the chance of passing one whose true drop exceeds the tolerance is
at most the sum of the looks' levels, α, at whichever look it stops (a union bound: conservative, as
the looks share items). An interim look fails a variant only when the drop's *lower* bound is above
the tolerance at that look's level: a clear fail. The last look is the fixed-sample rule at its level.

Items are taken in a seeded random order of their doc ids, so every look is a random sample of the
task and not, say, its easiest items first. Imports only numpy and scipy: the eval workers decide when
to stop in their own environments with this same code.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pipeline.measure.stats import binary, flips, paired_binary_upper, paired_drop

PASS, FAIL, CONTINUE = "pass", "fail", "continue"


@dataclass(frozen=True, kw_only=True)
class LookPlan:
    """When to look and at what level: cumulative item counts (the last is every item) and the
    one-sided error level of each look's bounds (they sum to 1 − confidence)."""

    sizes: list[int]
    alphas: list[float]
    confidence: float
    iters: int  # bootstrap resamples per bound

    @property
    def total(self) -> int:
        return self.sizes[-1]


def look_plan(n_items: int, looks: int, confidence: float, interim_share: float, min_items_per_look: int,
              iters: int) -> LookPlan:
    """Equally spaced looks, as many of the `looks` as leave each at least `min_items_per_look` items
    (one look, the fixed-sample gate, when the task is too small to split)."""
    alpha = 1 - confidence
    count = max(1, min(looks, n_items // max(1, min_items_per_look)))
    sizes = sorted({math.ceil(n_items * k / count) for k in range(1, count + 1)})
    if len(sizes) == 1 or interim_share <= 0:
        interim: list[float] = [0.0] * (len(sizes) - 1)
    else:
        interim = [alpha * interim_share / (len(sizes) - 1)] * (len(sizes) - 1)
    return LookPlan(sizes=sizes, alphas=[*interim, alpha - sum(interim)], confidence=confidence, iters=iters)


def item_order(doc_ids: Sequence[int], seed: str) -> list[int]:
    """The doc ids in the seeded random order the looks take them in (same seed, same order)."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "little"))
    ordered = sorted(doc_ids)
    return [ordered[i] for i in rng.permutation(len(ordered))]


@dataclass(frozen=True, kw_only=True)
class Settled:
    """The gate's outcome after the items scored so far: pass, fail, or continue to the next look."""

    outcome: str
    look: int  # 1-based look it was settled at (or the last look taken, when it continues)
    looks: int
    n: int  # items used
    total: int  # items the task has
    drop: float
    upper: float  # the drop's upper bound at this look's level
    lower: float | None  # its lower bound (interim looks only: a clear fail)
    alpha: float  # this look's one-sided level
    reason: str

    @property
    def early(self) -> bool:
        return self.outcome != CONTINUE and self.n < self.total


def _look(reference: Sequence[float], variant: Sequence[float], alpha: float, iters: int,
          lower_too: bool) -> tuple[float, float, float | None]:
    """(drop, its upper bound, its lower bound or None) at one-sided level `alpha` each: the score
    bound for right/wrong items, else the paired bootstrap."""
    drop = float(np.mean(np.asarray(reference, dtype=np.float64) - np.asarray(variant, dtype=np.float64)))
    if alpha <= 0:  # a look that spends nothing cannot settle anything
        return drop, math.inf, -math.inf if lower_too else None
    if binary(reference) and binary(variant):
        r2w, w2r = flips(reference, variant)
        upper = paired_binary_upper(r2w, w2r, len(reference), alpha)
        lower = -paired_binary_upper(w2r, r2w, len(reference), alpha) if lower_too else None
        return drop, upper, lower
    upper = paired_drop(reference, variant, 1 - alpha, iters).drop_upper
    lower = -paired_drop(variant, reference, 1 - alpha, iters).drop_upper if lower_too else None
    return drop, upper, lower


def settle(reference: Sequence[float], variant: Sequence[float], tolerance: float, plan: LookPlan) -> Settled:
    """The first look, among those the variant's items reach, at which the outcome is settled.

    `reference` and `variant` are paired values in the look order, the variant's possibly fewer
    (stopped early). At the last look the outcome is always settled: pass when the upper bound is
    within tolerance (and so the drop), else fail.
    """
    if len(variant) > len(reference):
        raise ValueError(f"more variant items ({len(variant)}) than reference items ({len(reference)})")
    if plan.total != len(reference):
        raise ValueError(f"the plan is for {plan.total} items, the reference has {len(reference)}")
    reached = [k for k, size in enumerate(plan.sizes) if size <= len(variant)]
    if not reached:
        raise ValueError(f"{len(variant)} items do not reach the first look ({plan.sizes[0]} items)")
    settled = None
    for k in reached:
        n, alpha, last = plan.sizes[k], plan.alphas[k], k == len(plan.sizes) - 1
        drop, upper, lower = _look(reference[:n], variant[:n], alpha, plan.iters, lower_too=not last)
        where = f"look {k + 1} of {len(plan.sizes)}, {n} of {plan.total} items, one-sided level {alpha:.4f}"
        if upper <= tolerance:
            outcome, reason = PASS, f"drop {drop:+.3f}, upper bound {upper:+.3f} within {tolerance:.3f} ({where})"
        elif last:
            outcome, reason = FAIL, f"drop {drop:+.3f}, upper bound {upper:+.3f} above {tolerance:.3f} ({where})"
        elif lower is not None and lower > tolerance:
            outcome, reason = FAIL, f"clear fail: drop {drop:+.3f}, lower bound {lower:+.3f} above {tolerance:.3f} ({where})"
        else:
            outcome, reason = CONTINUE, f"not settled: drop {drop:+.3f}, bounds [{lower:+.3f}, {upper:+.3f}] ({where})"
        settled = Settled(outcome=outcome, look=k + 1, looks=len(plan.sizes), n=n, total=plan.total, drop=drop,
                          upper=upper, lower=lower, alpha=alpha, reason=reason)
        if outcome != CONTINUE:
            return settled
    assert settled is not None
    return settled


@dataclass(frozen=True, kw_only=True)
class SimulationSummary:
    """Simulated gates with a planted true drop: how often each outcome, and the items used."""

    true_drop: float
    tolerance: float
    gates: int
    passed: int
    items_used_mean: float
    items_total: int
    stopped_early: int

    @property
    def pass_rate(self) -> float:
        return self.passed / self.gates

    @property
    def items_saved(self) -> float:
        return 1 - self.items_used_mean / self.items_total


def planted_pairs(rng: np.random.Generator, n: int, true_drop: float, reference_accuracy: float = 0.6,
                  wrong_to_right: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """n paired right/wrong items with P(right→wrong) − P(wrong→right) = `true_drop`."""
    right_to_wrong = wrong_to_right + true_drop
    if not (0 <= right_to_wrong <= reference_accuracy and wrong_to_right <= 1 - reference_accuracy):
        raise ValueError(f"drop {true_drop} does not fit reference accuracy {reference_accuracy}")
    reference = (rng.random(n) < reference_accuracy).astype(float)
    u = rng.random(n)
    # a right item turns wrong with P(r→w)/P(right); a wrong one turns right with P(w→r)/P(wrong)
    flip = np.where(reference == 1, u < right_to_wrong / reference_accuracy,
                    u < wrong_to_right / (1 - reference_accuracy))
    return reference, np.where(flip, 1 - reference, reference)


def simulate(true_drop: float, tolerance: float, plan: LookPlan, gates: int, seed: int = 0) -> SimulationSummary:
    """`gates` simulated gates on planted pairs, each stopped where `settle` settles it."""
    rng = np.random.default_rng(seed)
    passed = used = early = 0
    for _ in range(gates):
        reference, variant = planted_pairs(rng, plan.total, true_drop)
        outcome = settle(reference.tolist(), variant.tolist(), tolerance, plan)
        passed += outcome.outcome == PASS
        used += outcome.n
        early += outcome.early
    return SimulationSummary(true_drop=true_drop, tolerance=tolerance, gates=gates, passed=passed,
                             items_used_mean=used / gates, items_total=plan.total, stopped_early=early)
