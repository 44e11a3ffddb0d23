"""Per-sample files, task scores and the probe summary from an lm-eval run (standard library only),
shared by the eval workers so every engine stores its items the same way for paired comparisons.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.workers.messages import AlignmentSummary, TaskScore


def task_scores(results: dict[str, Any], tasks: list[str], out: Path) -> dict[str, TaskScore]:
    scores: dict[str, TaskScore] = {}
    for task in tasks:
        samples = sorted(results["samples"][task], key=lambda s: s["doc_id"])
        with open(out / f"samples_{task}.jsonl", "w") as handle:
            for sample in samples:
                handle.write(json.dumps({"doc_id": sample["doc_id"], "target": sample["target"],
                                         "correct": int(sample["acc"]),
                                         "loglikelihoods": [float(r[0]) for r in sample["filtered_resps"]]}) + "\n")
        scores[task] = TaskScore(acc=float(results["results"][task]["acc,none"]), n=len(samples),
                                 samples_file=f"samples_{task}.jsonl")
    return scores


def alignment_summary(probe: dict[str, Any]) -> AlignmentSummary:
    """The probe's verdict without its per-token rows (those stay in alignment_probe.json)."""
    return AlignmentSummary(**{k: v for k, v in probe.items() if k not in ("server_tokens", "scorer_rows")})
