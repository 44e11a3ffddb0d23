"""Recipe sections about traffic and money: the load sweep, the latency SLO, the hardware a replica
runs on and what it costs, and how promotion breaks a tie on cost.

Models only, no I/O; `load.py` checks the prompts file exists.
"""

from __future__ import annotations

import math

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from pipeline.recipe.strict import Strict


class TokenLengths(Strict):
    """A length in tokens: fixed (`64`), or a normal distribution clipped to [min, max]."""

    mean: int = Field(ge=1)
    stdev: int = Field(0, ge=0)
    min: int | None = Field(None, ge=1)
    max: int | None = Field(None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _fixed(cls, value: Any) -> Any:
        return {"mean": value} if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _bounds(self) -> "TokenLengths":
        if (self.min is not None and self.min > self.mean) or (self.max is not None and self.max < self.mean):
            raise ValueError(f"min {self.min} and max {self.max} must bracket the mean {self.mean}")
        return self

    @property
    def fixed(self) -> bool:
        return self.stdev == 0


class LoadConfig(Strict):
    """The load sweep: one workload sent at several load levels, each level measured on its own.

    GuideLLM generates it (synthetic text of exact token counts in the model's tokenizer, or the
    prompts of a JSONL file) against the served variant; warm-up requests are sent before each level
    and not measured."""

    api: Literal["completions", "chat"] = Field(
        "completions", description="/v1/completions, or /v1/chat/completions with the model's chat template")
    prompt_tokens: TokenLengths = TokenLengths(mean=128)
    output_tokens: TokenLengths = TokenLengths(mean=64)
    prompts_file: Path | None = Field(
        None, description='JSONL of real prompts, one {"prompt": str, "output_tokens": int} per line'
                          " (relative to the recipe); replaces the synthetic prompt lengths")
    shared_prefix_tokens: int = Field(0, ge=0, description="a prefix every prompt shares (a system prompt)")
    seed: int = Field(0, ge=0, description="same seed, same prompts and arrival times")
    profile: Literal["concurrency", "rate"] = Field(
        "concurrency", description="levels are concurrent streams, or request rates in requests/s")
    levels: list[float] = Field([1, 2, 4], min_length=1)
    repeats: int = Field(
        3, ge=1, le=10, description="passes through the levels (1, 2, 4, 1, 2, 4, ...); with 2 or more every"
                                    " interval also holds the spread between passes")
    arrivals: Literal["constant", "poisson"] = Field("poisson", description="rate profile only")
    requests_per_level: int = Field(8, ge=2, description="measured requests per level, in each pass")
    max_seconds_per_level: float = Field(120, gt=0, description="a level ends at this or its request count")
    warmup_requests: int = Field(2, ge=0, description="per stream at each level (per level for rates), in each pass; sent first, not measured")
    request_timeout_s: float = Field(120, gt=0, description="a request still open after this counts as an error")

    @model_validator(mode="after")
    def _levels(self) -> "LoadConfig":
        shown = "[" + ", ".join(f"{level:g}" for level in self.levels) + "]"
        if any(level <= 0 or not math.isfinite(level) for level in self.levels):
            raise ValueError(f"levels: {shown} must all be positive and finite")
        if self.levels != sorted(set(self.levels)):
            raise ValueError(f"levels: {shown} must be increasing, each once")
        if self.profile == "concurrency" and any(level != int(level) for level in self.levels):
            raise ValueError(f"levels: {shown} are concurrent streams with profile concurrency: whole numbers")
        if self.arrivals != "poisson" and self.profile != "rate":
            raise ValueError("arrivals: applies to profile rate only")
        return self

    def level_name(self, level: float) -> str:
        if self.profile == "concurrency":
            return f"{int(level)} stream{'s' if level != 1 else ''}"
        return f"{level:g} req/s"


class SLO(Strict):
    """Latency objectives at one percentile; a load level meets the SLO when every one that is set
    holds there and its error rate is within `max_error_rate`."""

    percentile: float = Field(95, ge=50, le=99.9)
    ttft_ms: float | None = Field(None, gt=0, description="time to first token")
    itl_ms: float | None = Field(None, gt=0, description="inter-token latency, per token gap")
    tpot_ms: float | None = Field(None, gt=0, description="time per output token after the first, per request")
    e2e_ms: float | None = Field(None, gt=0, description="end-to-end request latency")
    max_error_rate: float = Field(0.0, ge=0, le=1)

    def limits(self) -> dict[str, float]:
        """Metric name (as the load results name it) -> limit in ms, for the objectives that are set."""
        return {name: limit for name, limit in (("ttft_ms", self.ttft_ms), ("itl_ms", self.itl_ms),
                                                 ("tpot_ms", self.tpot_ms), ("e2e_ms", self.e2e_ms))
                if limit is not None}


class Hardware(Strict):
    """What one replica runs on and its price; capacity and $/1M tokens are computed from it."""

    name: str
    accelerator: str | None = Field(None, description="what one unit is, e.g. 'H100 80GB' or '2 vCPU VM'")
    usd_per_hour: float = Field(gt=0, description="price of one accelerator (or machine) per hour")
    memory_gib: float | None = Field(None, gt=0, description="memory of one accelerator; None: not checked")
    accelerators_per_replica: int | None = Field(
        None, ge=1, description="None: as many as the variant's weights and KV cache need (at least 1)")
    target_qps: float = Field(1.0, gt=0, description="requests/s the fleet must serve")
    headroom: float = Field(0.2, ge=0, le=4, description="spare capacity on top of target_qps")


class Promotion(Strict):
    """How the cheapest passing variant is searched for, and chosen when cost cannot tell two apart."""

    search: Literal["exhaustive", "cheapest_first"] = Field(
        "exhaustive", description="exhaustive: every variant measured in full (the whole table);"
                                  " cheapest_first: every variant's cost measured first, then its quality from the"
                                  " cheapest up, skipping what cannot change the decision (same decision)")

    cost_tie_break: Literal["quality", "size"] = Field(
        "quality", description="variants whose cost intervals overlap are tied on cost; the tie goes to the"
                               " smaller quality drop (quality) or the smaller artifact (size)")
