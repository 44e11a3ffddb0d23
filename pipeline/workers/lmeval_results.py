"""Per-sample files and task scores from an lm-eval result (standard library only), shared by the
eval workers so every engine stores its items the same way for paired comparisons.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def task_scores(results: dict[str, Any], tasks: list[str], out: Path) -> dict[str, Any]:
    scores: dict[str, Any] = {}
    for task in tasks:
        samples = sorted(results["samples"][task], key=lambda s: s["doc_id"])
        with open(out / f"samples_{task}.jsonl", "w") as handle:
            for sample in samples:
                handle.write(json.dumps({"doc_id": sample["doc_id"], "target": sample["target"],
                                         "correct": int(sample["acc"]),
                                         "loglikelihoods": [float(r[0]) for r in sample["filtered_resps"]]}) + "\n")
        scores[task] = {"acc": float(results["results"][task]["acc,none"]), "n": len(samples),
                        "samples_file": f"samples_{task}.jsonl"}
    return scores
