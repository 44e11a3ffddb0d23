"""The figures every divergence method reports (llama.cpp in-process, vLLM served), from per-position
KL, the count of top-1 agreements and the text's negative log-likelihood under each model."""

from __future__ import annotations

import math
from typing import Any


def summarize(kld: Any, agree: int, nll_reference: float, nll_variant: float) -> dict[str, Any]:
    import numpy as np

    kld = np.asarray(kld, dtype=float)
    n = len(kld)
    return {
        "n_tokens": n,
        "kld_mean": float(kld.mean()),
        "kld_median": float(np.median(kld)),
        "kld_p99": float(np.quantile(kld, 0.99)),
        "kld_max": float(kld.max()),
        "top1_agreement": agree / n,
        "flip_rate": 1 - agree / n,
        "ppl_reference": math.exp(nll_reference / n),
        "ppl_variant": math.exp(nll_variant / n),
        "ppl_ratio": math.exp((nll_variant - nll_reference) / n),
    }
