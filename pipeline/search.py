"""Cheapest-first search (`promotion.search: cheapest_first`): price every variant first, then
measure quality from the cheapest up, leaving out what cannot change the decision.

The decision (`promote.decide`) is the cheapest passing variant by cost estimate, then the tie among
the passing variants whose cost intervals overlap its own. So, going up in cost:
- a variant that fails its SLO (or whose cost is unknown) cannot pass, whatever its quality;
- once a variant has passed, a costlier one whose cost interval lies wholly above the passing one's
  can be neither the cheapest nor tied with it.
Neither is evaluated. Every other variant is measured in full, so the winner and the tie are the
exhaustive search's; a variant left out keeps its load figures and cost, and says why it was left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pipeline.measure.latency import Interval
from pipeline.promote import usd

SKIPPED = "not evaluated (cheapest-first search)"


@dataclass(frozen=True)
class Priced:
    """A variant's place in the search: its cost at the SLO load, known before its quality."""

    name: str
    cost: Interval | None  # $ per 1M output tokens; None: it cannot pass on load alone
    measured: bool = False  # its quality is in the store already: evaluating it costs nothing

    def rank(self) -> tuple[float, str]:
        """The order `promote.decide` finds the cheapest in."""
        assert self.cost is not None
        return self.cost.estimate, self.name


def cheapest_first(candidates: list[Priced], passed: list[Priced], evaluate: Callable[[str], bool]) -> dict[str, str]:
    """Evaluate `candidates` from the cheapest up; `evaluate(name)` measures one in full and says
    whether it passed every gate. `passed`: variants measured already that passed (the references
    that did). Returns the candidates left out, each with why."""
    skipped: dict[str, str] = {}
    cheapest = min(passed, key=Priced.rank, default=None)
    for candidate in sorted(candidates, key=lambda p: (p.cost is None, p.rank() if p.cost else (0.0, p.name))):
        if not candidate.measured and (why := _left_out(candidate, cheapest)):
            skipped[candidate.name] = why
            continue
        if evaluate(candidate.name) and candidate.cost is not None \
                and (cheapest is None or candidate.rank() < cheapest.rank()):
            cheapest = candidate
    return skipped


def _left_out(candidate: Priced, cheapest: Priced | None) -> str | None:
    """Why the decision cannot depend on this candidate's quality, or None."""
    if candidate.cost is None:
        return f"{SKIPPED}: it fails its load checks, so it cannot pass"
    if cheapest is None or cheapest.cost is None or candidate.rank() < cheapest.rank() \
            or candidate.cost.overlaps(cheapest.cost):
        return None
    return (f"{SKIPPED}: {cheapest.name} passed at {usd(cheapest.cost)} per 1M output tokens and this variant's"
            f" {usd(candidate.cost)} lies wholly above it")
