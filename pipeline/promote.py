"""Promotion rule: gate every variant on quality and SLO, then pick the cheapest that passes.

Every check is computed and reported before the decision; a missing or non-finite measurement
fails its check (fail closed), so a broken measurement can never promote a variant.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.cost import usd_per_million_tokens
from pipeline.recipe import SLO, Gates, Hardware


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    value: float | None
    limit: float | None
    detail: str


@dataclass(frozen=True)
class VariantEvidence:
    """What promotion needs to know about one variant, already measured."""

    name: str
    engine: str
    is_reference: bool
    accuracy: dict[str, float | None]  # task -> accuracy (None: not measured)
    alignment_passed: bool | None
    eval_error: str | None
    bench: dict[str, Any] | None  # BenchResult.to_json(), None if not measured
    bench_error: str | None = None


@dataclass(frozen=True)
class Verdict:
    variant: str
    passed: bool
    checks: list[Check]
    usd_per_1m_tokens: float | None
    promoted: bool = False

    @property
    def reasons(self) -> list[str]:
        return [c.detail for c in self.checks if not c.passed]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "reasons": self.reasons}


@dataclass(frozen=True)
class Decision:
    winner: str | None
    verdicts: list[Verdict]
    reason: str
    tasks: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"winner": self.winner, "reason": self.reason, "verdicts": [v.to_json() for v in self.verdicts]}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def quality_checks(variant: VariantEvidence, reference: VariantEvidence, tasks: list[str], gates: Gates) -> list[Check]:
    checks: list[Check] = []
    if variant.eval_error or not variant.alignment_passed:
        why = variant.eval_error or "scorer failed its alignment probe; no score counts"
        return [Check("eval", False, None, None, f"eval failed: {why}")]
    if reference.eval_error or not reference.alignment_passed:
        return [Check("reference", False, None, None, f"reference {reference.name} failed its eval: nothing to compare with")]
    for task in tasks:
        acc, ref = variant.accuracy.get(task), reference.accuracy.get(task)
        if not (_finite(acc) and _finite(ref)):
            checks.append(Check(f"{task}.drop", False, None, gates.max_accuracy_drop, f"{task}: accuracy missing or not finite"))
            continue
        drop = ref - acc  # type: ignore[operator]
        ok = drop <= gates.max_accuracy_drop + 1e-12
        checks.append(Check(
            f"{task}.drop", ok, round(drop, 4), gates.max_accuracy_drop,
            f"{task}: accuracy {acc:.3f} vs reference {ref:.3f} (drop {drop:+.3f}, allowed {gates.max_accuracy_drop:.3f})",
        ))
    return checks


def slo_checks(variant: VariantEvidence, slo: SLO) -> list[Check]:
    bench = variant.bench
    if bench is None:
        return [Check("bench", False, None, None, f"load benchmark missing: {variant.bench_error or 'not measured'}")]
    checks = []
    rate = bench.get("error_rate")
    checks.append(Check("error_rate", _finite(rate) and rate <= slo.max_error_rate, rate, slo.max_error_rate,
                        f"error rate {rate} (allowed {slo.max_error_rate}); first error: {bench.get('first_error')}"))
    for name, metric, limit in (("ttft_p95_ms", "ttft_ms", slo.ttft_p95_ms), ("itl_p95_ms", "itl_ms", slo.itl_p95_ms),
                                ("e2e_p95_ms", "e2e_ms", slo.e2e_p95_ms)):
        if limit is None:
            continue
        value = (bench.get(metric) or {}).get("p95")
        ok = _finite(value) and value <= limit
        shown = f"{value:.0f} ms" if _finite(value) else "missing"
        checks.append(Check(name, ok, value if _finite(value) else None, limit, f"{name.replace('_ms', '')} {shown} (SLO {limit:.0f} ms)"))
    return checks


def decide(evidence: list[VariantEvidence], tasks: list[str], gates: Gates, slo: SLO, hardware: Hardware) -> Decision:
    """Verdict for every variant, then the cheapest passing one by $ per 1M output tokens."""
    references = {e.engine: e for e in evidence if e.is_reference}
    verdicts = []
    for variant in evidence:
        reference = references.get(variant.engine)
        checks = (quality_checks(variant, reference, tasks, gates) if reference
                  else [Check("reference", False, None, None, f"no reference measured on engine {variant.engine}")])
        checks += slo_checks(variant, slo)
        tps = (variant.bench or {}).get("output_tokens_per_s")
        cost = usd_per_million_tokens(hardware.usd_per_hour, tps) if _finite(tps) else math.inf
        if not math.isfinite(cost):
            checks.append(Check("cost", False, None, None, "no throughput measured: cost unknown"))
        verdicts.append(Verdict(variant.name, all(c.passed for c in checks), checks,
                                round(cost, 4) if math.isfinite(cost) else None))
    passing = [v for v in verdicts if v.passed]
    if not passing:
        return Decision(None, verdicts, "no variant passed every gate; nothing promoted", tasks)
    winner = min(passing, key=lambda v: (v.usd_per_1m_tokens, v.variant))
    verdicts = [Verdict(v.variant, v.passed, v.checks, v.usd_per_1m_tokens, promoted=v is winner) for v in verdicts]
    reason = (f"{winner.variant} is the cheapest of {len(passing)} passing variant(s)"
              f" at ${winner.usd_per_1m_tokens:.4f} per 1M output tokens")
    return Decision(winner.variant, verdicts, reason, tasks)
