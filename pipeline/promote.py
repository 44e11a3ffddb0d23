"""Promotion rule: gate every variant on quality and SLO, then pick the cheapest that passes.

Quality is judged item by item against the reference on the same engine: a task passes only when
the one-sided upper confidence bound of its metric's drop is within tolerance (a point delta within
tolerance whose bound is not is "not enough evidence" and fails), and the next-token divergence
(KL, top-1 flips) is within its limits. A task on which the reference is not clearly above what
blind answers score (plus the tolerance) cannot tell variants apart: it is reported as
uninformative and never gated on, and with no informative task nothing passes on task evidence.
Evaluated sequentially (`evals.sequential`), a task is judged at the first look that settled it, at
that look's own level (`measure/sequential.py`). Every check is computed and reported before the
decision; a missing, partial or non-finite measurement fails its check (fail closed).

Cost is $ per 1M output tokens at the highest load that meets the SLO (`capacity.py`), with its
interval: variants whose cost intervals overlap are not told apart by cost, and the recipe's
`promotion.cost_tie_break` decides among them (the decision names the tie).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from pipeline.capacity import Capacity
from pipeline.measure.latency import Interval
from pipeline.measure.sequential import CONTINUE, PASS, item_order, look_plan, settle
from pipeline.measure.stats import (Informative, PairedComparison, binary, flips, informative, mcnemar_exact,
                                    paired_drop)
from pipeline.recipe.schema import Gates, SequentialConfig
from pipeline.recipe.traffic import Promotion

# Serving the reference against itself must show no divergence: anything above this is noise the
# measurement adds, and no delta measured with it can be trusted.
SELF_CHECK_KLD = 1e-6


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    value: float | None
    limit: float | None
    detail: str


@dataclass(frozen=True, kw_only=True)
class TaskItems:
    """One task's per-item results: the gate's metric, and for choice tasks the gold and chosen option."""

    metric: str
    values: list[float]
    gold: list[int] | None = None
    choice: list[int] | None = None
    n_choices: list[int] | None = None
    doc_ids: list[int] | None = None  # lm-eval's doc ids (unique within one lm-eval task)


@dataclass(frozen=True, kw_only=True)
class VariantEvidence:
    """What promotion needs to know about one variant, already measured."""

    name: str
    engine: str
    is_reference: bool
    tasks: dict[str, TaskItems]  # gated task -> per-item results in doc order (missing task: not measured)
    alignment_passed: bool | None
    eval_error: str | None
    capacity: Capacity | None  # the load sweep judged against the SLO and priced; None if not measured
    load_error: str | None = None
    size_bytes: int | None = None  # the artifact's size (a cost tie can go to the smaller one)
    divergence: dict[str, Any] | None = None  # vs the engine's reference; None if not measured
    divergence_error: str | None = None
    parity: dict[str, Any] | None = None  # references: engine vs transformers ({"mean_abs_diff", "limit", …})
    parity_error: str | None = None
    not_run: str | None = None  # the plan did not run it here (measured not to run on this engine build)
    skipped: str | None = None  # cheapest-first search priced it and left its quality unmeasured: why


@dataclass(frozen=True)
class Verdict:
    variant: str
    passed: bool
    checks: list[Check]
    cost: Interval | None  # $ per 1M output tokens at the SLO load, with its interval
    comparisons: dict[str, PairedComparison] = field(default_factory=dict)
    promoted: bool = False
    informative: dict[str, Informative] = field(default_factory=dict)  # per task, judged on the reference

    @property
    def usd_per_1m_tokens(self) -> float | None:
        return self.cost.estimate if self.cost else None

    def quality_drop(self) -> float:
        """The largest point drop over the gated tasks (what a cost tie is broken on by default)."""
        return max((c.drop for c in self.comparisons.values()), default=0.0)

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
    tied: list[str] = field(default_factory=list)  # passing variants the winner could not be told from by cost

    def verdict(self, name: str) -> Verdict:
        return next(v for v in self.verdicts if v.variant == name)

    def to_json(self) -> dict[str, Any]:
        return {"winner": self.winner, "reason": self.reason, "tied": self.tied,
                "verdicts": [v.to_json() for v in self.verdicts]}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _usable(evidence: VariantEvidence) -> str | None:
    """Why this variant's evals cannot be used, or None."""
    if evidence.eval_error:
        return evidence.eval_error
    if not evidence.alignment_passed:
        return "scorer failed its alignment probe; no score counts"
    return None


def _in_look_order(ours: TaskItems, theirs: TaskItems, task: str) -> tuple[list[float], list[float]] | None:
    """Both models' values in sequential evaluation's item order, the variant's as far as it was scored;
    None when the items are not one lm-eval task's (no unique doc ids) or the variant's are not a prefix
    of that order (then they are partial)."""
    if ours.doc_ids is None or theirs.doc_ids is None or len(set(theirs.doc_ids)) != len(theirs.doc_ids):
        return None
    order = item_order(theirs.doc_ids, task)
    if set(ours.doc_ids) != set(order[:len(ours.doc_ids)]):
        return None
    reference = dict(zip(theirs.doc_ids, theirs.values))
    variant = dict(zip(ours.doc_ids, ours.values))
    return [reference[doc] for doc in order], [variant[doc] for doc in order[:len(variant)]]


def _sequential_check(task: str, metric: str, reference: list[float], variant: list[float], tolerance: float,
                      gates: Gates, sequential: SequentialConfig) -> tuple[Check, PairedComparison] | None:
    """The gate at the first look its items settle, as the eval worker judged it when it stopped."""
    plan = look_plan(len(reference), sequential.looks, gates.confidence, sequential.interim_share,
                     sequential.min_items_per_look, gates.bootstrap_iters)
    if len(plan.sizes) < 2 or len(variant) < plan.sizes[0]:
        return None
    settled = settle(reference, variant, tolerance, plan)
    if settled.outcome == CONTINUE:  # stopped before its gate was settled: partial
        return None
    used_reference, used_variant = reference[:settled.n], variant[:settled.n]
    r2w, w2r = flips(used_reference, used_variant)
    right_wrong = binary(used_reference) and binary(used_variant)
    c = PairedComparison(n=settled.n, reference_score=sum(used_reference) / settled.n,
                         variant_score=sum(used_variant) / settled.n, drop=settled.drop, drop_upper=settled.upper,
                         confidence=1 - settled.alpha, right_to_wrong=r2w if right_wrong else None,
                         wrong_to_right=w2r if right_wrong else None,
                         mcnemar_p=mcnemar_exact(r2w, w2r) if right_wrong else None)
    flipped = f"; {r2w} right→wrong, {w2r} wrong→right" if right_wrong else ""
    passed = settled.outcome == PASS
    return Check(f"{task}.drop_upper", passed, round(settled.upper, 4), tolerance,
                 f"{task}: {metric} {settled.reason}{flipped}"), c


def task_checks(variant: VariantEvidence, reference: VariantEvidence, tasks: list[str], gates: Gates,
                tolerances: dict[str, float], sequential: SequentialConfig | None = None
                ) -> tuple[list[Check], dict[str, PairedComparison], dict[str, Informative]]:
    """Per task, the drop's bound against its tolerance, on the tasks that can tell variants apart
    (evaluated sequentially: at the first look that settled it)."""
    if why := _usable(variant):
        return [Check("eval", False, None, None, f"eval failed: {why}")], {}, {}
    if why := _usable(reference):
        return [Check("reference", False, None, None,
                      f"reference {reference.name} failed its eval ({why}): nothing to compare with")], {}, {}
    checks, comparisons, informed = [], {}, {}
    for task in tasks:
        tolerance = tolerances.get(task, gates.tolerance(task))
        ours, theirs = variant.tasks.get(task), reference.tasks.get(task)
        paired = _in_look_order(ours, theirs, task) if sequential and ours and theirs else None
        judged = None
        if paired is not None and all(_finite(x) for x in (*paired[0], *paired[1])):
            judged = _sequential_check(task, theirs.metric, paired[0], paired[1], tolerance, gates, sequential)
        if judged is not None and theirs is not None:
            informed[task] = info = informative(theirs.values, tolerance, gates.confidence, theirs.gold,
                                                theirs.choice, theirs.n_choices)
            if info.informative:
                checks.append(judged[0])
                comparisons[task] = judged[1]
            continue
        if not ours or not theirs or len(ours.values) != len(theirs.values):
            checks.append(Check(f"{task}.drop", False, None, tolerance,
                                f"{task}: per-item results missing or partial ({len(ours.values) if ours else 0} vs"
                                f" {len(theirs.values) if theirs else 0} reference items)"))
            continue
        if not all(_finite(x) for x in (*ours.values, *theirs.values)):
            checks.append(Check(f"{task}.drop", False, None, tolerance,
                                f"{task}: per-item results hold values that are not finite numbers: not comparable"))
            continue
        informed[task] = info = informative(theirs.values, tolerance, gates.confidence, theirs.gold, theirs.choice,
                                            theirs.n_choices)
        if not info.informative:  # no evidence either way: reported, never gated on
            continue
        c = paired_drop(theirs.values, ours.values, gates.confidence, gates.bootstrap_iters)
        comparisons[task] = c
        flips = (f"{c.right_to_wrong} right→wrong, {c.wrong_to_right} wrong→right of {c.n}"
                 if c.right_to_wrong is not None else f"{c.n} items")
        bound = f"{c.confidence:.0%} upper bound {c.drop_upper:+.3f}"
        if c.drop > tolerance:
            checks.append(Check(f"{task}.drop", False, round(c.drop, 4), tolerance,
                                f"{task}: {theirs.metric} drop {c.drop:+.3f} exceeds {tolerance:.3f} ({bound}; {flips})"))
        elif c.drop_upper > tolerance:
            checks.append(Check(f"{task}.drop_upper", False, round(c.drop_upper, 4), tolerance,
                                f"{task}: not enough evidence: drop {c.drop:+.3f} is within {tolerance:.3f} but its"
                                f" {bound} is not ({flips})"))
        else:
            checks.append(Check(f"{task}.drop_upper", True, round(c.drop_upper, 4), tolerance,
                                f"{task}: drop {c.drop:+.3f}, {bound} within {tolerance:.3f} ({flips})"))
    uninformative = [task for task, info in informed.items() if not info.informative]
    if tasks and len(uninformative) == len(tasks):
        checks.append(Check("task_evidence", False, None, None,
                            f"no task can tell variants apart ({'; '.join(f'{t}: {informed[t].reason}' for t in tasks)}):"
                            " nothing is promoted on task evidence"))
    return checks, comparisons, informed


def parity_check(reference: VariantEvidence) -> Check:
    """The engine's reference must agree with transformers, or its deltas measure the engine."""
    p = reference.parity or {}
    value, limit = p.get("mean_abs_diff"), p.get("limit")
    if not (_finite(value) and _finite(limit)):
        return Check("engine_parity", False, None, limit if _finite(limit) else None,
                     f"engine check missing for reference {reference.name} on {reference.engine}:"
                     f" {reference.parity_error or 'not measured'}")
    ok = value <= limit
    return Check("engine_parity", ok, value, limit,
                 f"engine check: reference {reference.name} on {reference.engine} vs transformers, mean"
                 f" |Δ logprob| {value:.4f} nats/token (limit {limit})")


def divergence_checks(variant: VariantEvidence, reference: VariantEvidence, gates: Gates) -> list[Check]:
    if gates.max_kld is None and gates.max_flip_rate is None:
        return []
    ref_div = reference.divergence
    if ref_div is None or not _finite(ref_div.get("kld_mean")) or ref_div["kld_mean"] > SELF_CHECK_KLD:
        shown = (ref_div or {}).get("kld_mean", reference.divergence_error or "missing")
        return [Check("divergence.self_check", False, None, SELF_CHECK_KLD,
                      f"reference {reference.name} against itself must show KL 0 (got {shown}):"
                      " the divergence measurement is not trustworthy")]
    div = variant.divergence
    if div is None:
        return [Check("divergence", False, None, None,
                      f"divergence missing: {variant.divergence_error or 'not measured'}")]
    checks = []
    for name, key, limit in (("kld_mean", "kld_mean", gates.max_kld), ("flip_rate", "flip_rate", gates.max_flip_rate)):
        if limit is None:
            continue
        value = div.get(key)
        ok = _finite(value) and value <= limit
        shown = f"{value:.4f}" if _finite(value) else "missing"
        checks.append(Check(name, ok, value if _finite(value) else None, limit,
                            f"{name.replace('_', ' ')} {shown} on the divergence text (limit {limit})"))
    return checks


def price(variant: VariantEvidence) -> tuple[list[Check], Interval | None]:
    """The SLO check (and a cost check when the SLO load has no throughput) and the cost with its
    interval (None: unknown). A variant that fails either cannot pass, whatever its quality."""
    checks = [slo_check(variant)]
    cost = variant.capacity.usd_per_1m_tokens if variant.capacity else None
    if cost is not None and not (_finite(cost.estimate) and cost.estimate > 0):
        checks.append(Check("cost", False, None, None, "no throughput at the SLO load: cost unknown"))
        cost = None
    return checks, cost


def slo_check(variant: VariantEvidence) -> Check:
    capacity = variant.capacity
    if capacity is None:
        return Check("slo", False, None, None, f"load benchmark missing: {variant.load_error or 'not measured'}")
    level = capacity.slo_level.level if capacity.slo_level else None
    if not capacity.meets_slo:
        return Check("slo", False, level, None, capacity.reason)
    return Check("slo", True, level, None, capacity.reason)


def decide(evidence: list[VariantEvidence], tasks: list[str], gates: Gates, promotion: Promotion = Promotion(),
           tolerances: dict[str, float] | None = None, sequential: SequentialConfig | None = None) -> Decision:
    """Verdict for every variant, then the cheapest passing one by $ per 1M output tokens at the SLO.

    `tasks` are the gated task labels; `tolerances` overrides the gates' tolerance per task."""
    references = {e.engine: e for e in evidence if e.is_reference}
    verdicts = []
    for variant in evidence:
        reference = references.get(variant.engine)
        comparisons: dict[str, PairedComparison] = {}
        informed: dict[str, Informative] = {}
        if variant.not_run:  # nothing was measured: one reason, not one per missing figure
            verdicts.append(Verdict(variant.name, False, [Check("runs_here", False, None, None, variant.not_run)], None))
            continue
        if variant.skipped:  # priced only: its cost is shown, its quality was not measured
            load_checks, cost = price(variant)
            verdicts.append(Verdict(variant.name, False, [Check("evaluated", False, None, None, variant.skipped),
                                                          *load_checks], cost))
            continue
        if reference is None:
            checks = [Check("reference", False, None, None, f"no reference measured on engine {variant.engine}")]
        else:
            checks, comparisons, informed = task_checks(variant, reference, tasks, gates, tolerances or {},
                                                        sequential if not variant.is_reference else None)
            checks.append(parity_check(reference))
            checks += divergence_checks(variant, reference, gates)
        load_checks, cost = price(variant)
        checks += load_checks
        verdicts.append(Verdict(variant.name, all(c.passed for c in checks), checks, cost, comparisons,
                                informative=informed))
    passing = [v for v in verdicts if v.passed and v.cost is not None]
    skipped = [e.name for e in evidence if e.skipped]
    searched = (f" (cheapest-first search: {len(skipped)} variant(s) priced but not evaluated, as they could not"
                f" change the decision: {', '.join(skipped)})") if skipped else ""
    if not passing:
        return Decision(None, verdicts, "no variant passed every gate; nothing promoted" + searched)
    sizes = {e.name: e.size_bytes if e.size_bytes is not None else math.inf for e in evidence}
    winner, tied = choose(passing, sizes, promotion)
    verdicts = [replace(v, promoted=v is winner) for v in verdicts]
    assert winner.cost is not None
    reason = (f"{winner.variant} is the cheapest of {len(passing)} passing variant(s)"
              f" at {usd(winner.cost)} per 1M output tokens")
    if len(tied) > 1:
        shown = ", ".join(f"{v.variant} {usd(v.cost)}" for v in tied)  # type: ignore[arg-type]
        if promotion.cost_tie_break == "quality":
            rule = "the smaller quality drop (" + ", ".join(f"{v.variant} {v.quality_drop():+.3f}" for v in tied) + ")"
        else:
            rule = "the smaller artifact (" + ", ".join(f"{v.variant} {sizes[v.variant] / 1e6:.0f} MB" for v in tied) + ")"
        reason = (f"{winner.variant} promoted: {len(tied)} passing variants cannot be told apart by cost ({shown});"
                  f" the tie goes to {rule}")
    return Decision(winner.variant, verdicts, reason + searched, tied=[v.variant for v in tied] if len(tied) > 1 else [])


def choose(passing: list[Verdict], sizes: dict[str, float], promotion: Promotion) -> tuple[Verdict, list[Verdict]]:
    """The winner among the passing, priced verdicts, and the tie it was chosen from: the cheapest by
    cost estimate and every one whose cost interval overlaps its own (`search.py` relies on this)."""
    cheapest = min(passing, key=lambda v: (v.cost.estimate, v.variant))  # type: ignore[union-attr]
    tied = sorted((v for v in passing if v.cost.overlaps(cheapest.cost)),  # type: ignore[union-attr,arg-type]
                  key=lambda v: v.cost.estimate)  # type: ignore[union-attr]
    if promotion.cost_tie_break == "quality":
        return min(tied, key=lambda v: (v.quality_drop(), v.cost.estimate, v.variant)), tied  # type: ignore[union-attr]
    return min(tied, key=lambda v: (sizes[v.variant], v.cost.estimate, v.variant)), tied  # type: ignore[union-attr]


def usd(cost: Interval) -> str:
    bounds = (f" [{cost.low:.4f}–{cost.high:.4f}]" if cost.low is not None and cost.high is not None
              else " [interval unbounded]")
    return f"${cost.estimate:.4f}{bounds}"
