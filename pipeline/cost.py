"""Cost model: dollars per million output tokens from measured throughput and the hardware price."""

from __future__ import annotations

import math


def usd_per_million_tokens(usd_per_hour: float, output_tokens_per_s: float) -> float:
    """Hourly price spread over the tokens the variant produced per hour under the bench load.

    Returns inf when the variant produced nothing (it can never be the cheapest).
    """
    if not output_tokens_per_s or output_tokens_per_s <= 0 or math.isnan(output_tokens_per_s):
        return math.inf
    return usd_per_hour / (output_tokens_per_s * 3600.0) * 1_000_000.0
