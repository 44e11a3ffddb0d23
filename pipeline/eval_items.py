"""The eval items as a reviewer reads them: each task's items (prompt and expected answer) for MLflow's
dataset view, and the items a variant answered differently from its reference, as a table.

The gate's per-item files hold values and choices only; the prompt and choice texts come from
lm-eval's own samples beside them (`lm-eval/<task>/<model>/samples_<subtask>_<time>.jsonl`),
when they are there.
"""

from __future__ import annotations

import json
from typing import Any

from pipeline.measure.evals import EvalResult

TEXT_CHARS = 300  # of a prompt or an answer in a table cell
MAX_FLIPS = 500  # rows per variant: a reviewer reads the first ones; the counts are metrics


def _texts(evals: EvalResult, label: str) -> dict[tuple[str, int], dict[str, Any]]:
    """(subtask, doc_id) -> {"prompt", "choices"} from lm-eval's samples of this task."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for path in sorted((evals.folder / "lm-eval" / label.split("/")[0]).glob("*/samples_*.jsonl")):
        subtask = path.name.removeprefix("samples_").rsplit("_", 1)[0]
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            sample = json.loads(line)
            arguments = sample.get("arguments") or {}
            calls = list(arguments.values()) if isinstance(arguments, dict) else list(arguments)
            calls = [c if isinstance(c, dict) else {f"arg_{i}": a for i, a in enumerate(c)} for c in calls]
            out[(subtask, int(sample["doc_id"]))] = {
                "prompt": str(calls[0].get("arg_0", "")) if calls else "",
                "choices": [str(c.get("arg_1", "")) for c in calls] if len(calls) > 1 else None}
    return out


def _subtask(item: dict[str, Any], label: str) -> str:
    return item.get("subtask") or label.rsplit("/", 1)[-1]


def _cut(text: str) -> str:
    return text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS - 1] + "…"


def _answer(item: dict[str, Any], text: dict[str, Any] | None) -> str:
    if "choice" not in item:
        return _cut(str(item.get("response", "")))
    choices = (text or {}).get("choices")
    return _cut(choices[item["choice"]]) if choices and item["choice"] < len(choices) else f"choice {item['choice']}"


def _expected(item: dict[str, Any], text: dict[str, Any] | None) -> str:
    if "gold" in item:
        choices = (text or {}).get("choices")
        return _cut(choices[item["gold"]]) if choices and item["gold"] < len(choices) else f"choice {item['gold']}"
    return _cut(str(item.get("target", "")))


def dataset(evals: EvalResult, label: str) -> dict[str, list[Any]]:
    """The task's items as columns: subtask, doc_id, prompt, expected answer."""
    texts = _texts(evals, label)
    columns: dict[str, list[Any]] = {"subtask": [], "doc_id": [], "prompt": [], "expected": []}
    for item in evals.items(label):
        text = texts.get((_subtask(item, label), int(item["doc_id"])))
        columns["subtask"].append(_subtask(item, label))
        columns["doc_id"].append(int(item["doc_id"]))
        columns["prompt"].append(_cut(text["prompt"]) if text else "")
        columns["expected"].append(_expected(item, text))
    return columns


def flipped(reference: EvalResult, variant: EvalResult, labels: list[str]) -> dict[str, list[Any]]:
    """The items whose metric differs between reference and variant, right→wrong first, as columns."""
    rows = []
    for label in labels:
        if label not in reference.tasks or label not in variant.tasks:
            continue
        texts = _texts(variant, label)
        theirs = {(_subtask(i, label), int(i["doc_id"])): i for i in reference.items(label)}
        for ours in variant.items(label):
            key = (_subtask(ours, label), int(ours["doc_id"]))
            ref = theirs.get(key)
            if ref is None or float(ref["value"]) == float(ours["value"]):
                continue
            text = texts.get(key)
            rows.append({"task": label, "subtask": key[0], "doc_id": key[1],
                         "direction": "right→wrong" if float(ref["value"]) > float(ours["value"]) else "wrong→right",
                         "reference_value": float(ref["value"]), "variant_value": float(ours["value"]),
                         "prompt": _cut(text["prompt"]) if text else "", "expected": _expected(ours, text),
                         "reference_answer": _answer(ref, text), "variant_answer": _answer(ours, text)})
    rows.sort(key=lambda r: (r["direction"] != "right→wrong", r["task"], r["subtask"], r["doc_id"]))
    rows = rows[:MAX_FLIPS]
    names = ["task", "subtask", "doc_id", "direction", "reference_value", "variant_value", "prompt", "expected",
             "reference_answer", "variant_answer"]
    return {name: [row[name] for row in rows] for name in names}
