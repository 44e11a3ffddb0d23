"""Paired statistics for the quality gate: item-by-item deltas with confidence bounds, and flips.

Both models answered the same items, so the comparison is paired: resampling items (not models)
gives a much tighter interval than two unpaired standard errors, and flips say where they differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedComparison:
    n: int
    reference_acc: float
    variant_acc: float
    drop: float  # reference - variant (positive: the variant is worse)
    drop_upper: float  # one-sided upper confidence bound on the drop
    confidence: float
    right_to_wrong: int
    wrong_to_right: int
    mcnemar_p: float  # exact two-sided McNemar test on the discordant pairs


def flips(reference: list[int], variant: list[int]) -> tuple[int, int]:
    """(items the reference got right and the variant wrong, the reverse)."""
    r2w = sum(1 for r, v in zip(reference, variant) if r and not v)
    w2r = sum(1 for r, v in zip(reference, variant) if v and not r)
    return r2w, w2r


def mcnemar_exact(r2w: int, w2r: int) -> float:
    """Two-sided exact binomial test of r2w vs w2r discordant pairs (p=1 when there are none)."""
    n = r2w + w2r
    if n == 0:
        return 1.0
    k = min(r2w, w2r)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_bootstrap_drop(
    reference: list[int], variant: list[int], confidence: float = 0.95, iters: int = 10_000, seed: int = 0
) -> PairedComparison:
    """Accuracy drop with a one-sided paired-bootstrap upper bound at `confidence`.

    Raises:
        ValueError: the two lists are not the same items (different lengths) or are empty.
    """
    if len(reference) != len(variant) or not reference:
        raise ValueError(f"paired comparison needs the same items: {len(reference)} vs {len(variant)}")
    ref = np.asarray(reference, dtype=np.float64)
    var = np.asarray(variant, dtype=np.float64)
    per_item = ref - var  # +1 right->wrong, -1 wrong->right, 0 same
    n = len(per_item)
    rng = np.random.default_rng(seed)
    # Resample items in chunks to keep memory flat for large sets.
    means = np.empty(iters)
    chunk = max(1, 2_000_000 // n)
    for start in range(0, iters, chunk):
        size = min(chunk, iters - start)
        idx = rng.integers(0, n, size=(size, n))
        means[start:start + size] = per_item[idx].mean(axis=1)
    r2w, w2r = flips(reference, variant)
    return PairedComparison(
        n=n,
        reference_acc=float(ref.mean()),
        variant_acc=float(var.mean()),
        drop=float(per_item.mean()),
        drop_upper=float(np.quantile(means, confidence)),
        confidence=confidence,
        right_to_wrong=r2w,
        wrong_to_right=w2r,
        mcnemar_p=mcnemar_exact(r2w, w2r),
    )
