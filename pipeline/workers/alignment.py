"""The alignment probe's verdict (standard library only), shared by every engine's eval worker.

A loglikelihood scorer must read each token's logprob at the position that predicts it. The probe
asks the served model for greedy tokens and checks the scorer agrees with them position by position.
"""

from __future__ import annotations

import math
from typing import Any

PROBE_PROMPT = "The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is"


def check_alignment(
    server_tokens: list[dict[str, Any]], scorer_rows: list[dict[str, Any]],
    confident_margin: float = 0.5, median_tolerance: float = 0.1, max_tolerance: float = 1.0,
) -> dict[str, Any]:
    """Compare greedy server tokens with the scorer's distribution at the same positions.

    The server decodes one token at a time and the scorer a whole batch, so their kernels differ
    and low-bit types show up to ~0.3 nats of noise, flipping near-ties (seen on Q2_K). A scorer
    reading the wrong position is off by nats and confidently prefers other tokens. So: no
    greedy token may lose to a scorer top-1 that leads by `confident_margin` or more, and the
    median / max |Δ logprob| must stay within `median_tolerance` / `max_tolerance` nats.

    Args:
        server_tokens: per generated token, {"id", "logprob"} as the server reported it.
        scorer_rows: per generated token, {"top1_id", "top1_logprob", "top2_logprob", "token_logprob"}
            from the scorer at the position that predicts that token.

    Returns:
        {"passed", "n", "median_abs_diff", "max_abs_diff", "confident_mismatches", "near_tie_flips", "reason"}.
    """
    if not server_tokens or len(server_tokens) != len(scorer_rows):
        return {"passed": False, "n": len(server_tokens), "median_abs_diff": None, "max_abs_diff": None,
                "confident_mismatches": None, "near_tie_flips": None,
                "reason": f"probe got {len(server_tokens)} server tokens and {len(scorer_rows)} scorer rows"}
    diffs = sorted(abs(s["logprob"] - r["token_logprob"]) for s, r in zip(server_tokens, scorer_rows))
    lead = [r["top1_logprob"] - r["token_logprob"] for r in scorer_rows]  # 0 where the scorer agrees
    confident = sum(1 for s, r, d in zip(server_tokens, scorer_rows, lead) if s["id"] != r["top1_id"] and d >= confident_margin)
    flips = sum(1 for s, r in zip(server_tokens, scorer_rows) if s["id"] != r["top1_id"])
    median = diffs[len(diffs) // 2]
    finite = all(math.isfinite(d) for d in diffs)
    passed = finite and confident == 0 and median <= median_tolerance and diffs[-1] <= max_tolerance
    reason = "" if passed else (
        f"scorer disagrees with the served model: {confident} of {len(diffs)} greedy tokens lose to a scorer"
        f" top-1 leading by ≥ {confident_margin} nats; |Δ logprob| median {median:.3f} (≤ {median_tolerance}),"
        f" max {diffs[-1]:.3f} (≤ {max_tolerance}) nats"
    )
    return {"passed": passed, "n": len(diffs), "median_abs_diff": round(median, 5), "max_abs_diff": round(diffs[-1], 5),
            "confident_mismatches": confident, "near_tie_flips": flips, "reason": reason}
