"""Per-item answer lists with known flips, for the paired-statistics and promotion tests."""

from __future__ import annotations


def flipped(reference: list[int], r2w: int = 0, w2r: int = 0) -> list[int]:
    """The reference's answers with the first r2w right items made wrong and the first w2r wrong ones made right."""
    variant = list(reference)
    right = [i for i, r in enumerate(reference) if r]
    wrong = [i for i, r in enumerate(reference) if not r]
    assert r2w <= len(right) and w2r <= len(wrong)
    for i in right[:r2w]:
        variant[i] = 0
    for i in wrong[:w2r]:
        variant[i] = 1
    return variant
