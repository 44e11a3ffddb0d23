"""Benchmark: does sequential evaluation keep the gate's promise, and what does it save?

Simulated gates on paired right/wrong items with a planted true drop (below, at and above the
tolerance): the rate at which each rule promotes, and the items the sequential rule scores. The rules:
- `sequential`: 4 looks (`measure/sequential.py`, the score bound, 30% of α spent on early passes);
- `fixed, score bound`: every item, one look at the full α;
- `fixed, bootstrap`: every item, the paired percentile bootstrap the fixed-sample gate uses today.
A planted drop at or above the tolerance that passes is a false promotion: its rate must stay at or
under 1 − confidence. Writes JSON and a markdown table.

Usage: python -m benchmarks.sequential_gates [--gates 1000] [--items 400] [--out artifacts/benchmarks/sequential_gates.json]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from pipeline.artifacts import write_json, write_text
from pipeline.measure.sequential import look_plan, planted_pairs, simulate
from pipeline.measure.stats import paired_drop

TOLERANCE = 0.02
CONFIDENCE = 0.95
DROPS = (0.0, 0.01, 0.02, 0.03, 0.05, 0.10)


def bootstrap_pass_rate(true_drop: float, items: int, gates: int, seed: int) -> float:
    """The fixed-sample gate as it is today: pass when the 95% paired-bootstrap upper bound is within tolerance."""
    rng = np.random.default_rng(seed)
    passed = 0
    for _ in range(gates):
        reference, variant = planted_pairs(rng, items, true_drop)
        passed += paired_drop(reference.tolist(), variant.tolist(), CONFIDENCE, 2000).drop_upper <= TOLERANCE
    return passed / gates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gates", type=int, default=1000)
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--out", type=Path, default=Path("artifacts/benchmarks/sequential_gates.json"))
    args = parser.parse_args()
    sequential = look_plan(args.items, 4, CONFIDENCE, 0.3, 50, 2000)
    fixed = look_plan(args.items, 1, CONFIDENCE, 0.3, 50, 2000)
    rows = []
    started = time.monotonic()
    for i, drop in enumerate(DROPS):
        seq = simulate(drop, TOLERANCE, sequential, args.gates, seed=100 + i)
        one = simulate(drop, TOLERANCE, fixed, args.gates, seed=100 + i)
        boot = bootstrap_pass_rate(drop, args.items, args.gates, seed=200 + i) if drop in (0.0, TOLERANCE) else None
        rows.append({"true_drop": drop, "false_promotion_possible": drop >= TOLERANCE,
                     "sequential": {**asdict(seq), "pass_rate": seq.pass_rate, "items_saved": seq.items_saved},
                     "fixed_score_pass_rate": one.pass_rate, "fixed_bootstrap_pass_rate": boot})
        print(f"drop {drop:.2f}: sequential passes {seq.pass_rate:.3f}, saves {seq.items_saved:.0%} of items;"
              f" fixed (score) passes {one.pass_rate:.3f}" + (f", fixed (bootstrap) {boot:.3f}" if boot is not None else ""),
              flush=True)
    worst = max(r["sequential"]["pass_rate"] for r in rows if r["false_promotion_possible"])
    result = {"gates_per_drop": args.gates, "items": args.items, "tolerance": TOLERANCE, "confidence": CONFIDENCE,
              "looks": sequential.sizes, "alphas": sequential.alphas, "rows": rows,
              "worst_false_promotion_rate": worst, "promise_kept": worst <= 1 - CONFIDENCE,
              "seconds": round(time.monotonic() - started, 1)}
    write_json(args.out, result)
    lines = [f"Simulated gates: {args.gates} per planted drop, {args.items} right/wrong items, tolerance {TOLERANCE},"
             f" confidence {CONFIDENCE}; sequential looks at {sequential.sizes}.", "",
             "| true drop | sequential: pass rate | items saved | stopped early | fixed, score bound: pass rate"
             " | fixed, bootstrap: pass rate |", "|---|---|---|---|---|---|"]
    for r in rows:
        s = r["sequential"]
        boot = f"{r['fixed_bootstrap_pass_rate']:.3f}" if r["fixed_bootstrap_pass_rate"] is not None else "–"
        lines.append(f"| {r['true_drop']:.2f}{' (false promotion)' if r['false_promotion_possible'] else ''}"
                     f" | {s['pass_rate']:.3f} | {s['items_saved']:.0%} | {s['stopped_early'] / args.gates:.0%}"
                     f" | {r['fixed_score_pass_rate']:.3f} | {boot} |")
    lines += ["", f"Worst false-promotion rate: {worst:.3f} (promise: ≤ {1 - CONFIDENCE:.2f})."]
    write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
