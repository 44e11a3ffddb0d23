"""The eval items a reviewer reads: the prompts and answers come from lm-eval's own samples, the
flipped items are exactly those whose metric differs from the reference's, right→wrong first."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline import eval_items
from pipeline.measure.evals import EvalResult
from pipeline.workers.messages import AlignmentSummary, TaskScore

CONTEXTS = ["The keys to the cabinet", "The dog", "The boys near the car"]
CHOICES = [(" is here.", " are here."), (" runs.", " run."), (" is red.", " are red.")]


def _eval(folder: Path, choices: list[int], golds: list[int], echo: list[str]) -> EvalResult:
    """A choice task and a generative one, as the gate's item files and lm-eval's samples hold them."""
    folder.mkdir()
    rows = [{"doc_id": i, "value": float(c == g), "choice": c, "n_choices": 2, "gold": g, "subtask": "qg_agreement"}
            for i, (c, g) in enumerate(zip(choices, golds))]
    (folder / "samples_agreement.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    samples = folder / "lm-eval" / "agreement" / "model"
    samples.mkdir(parents=True)
    (samples / "samples_qg_agreement_2026-11-30T01-26-51.238079.jsonl").write_text("".join(json.dumps({
        "doc_id": i, "arguments": {f"gen_args_{j}": {"arg_0": CONTEXTS[i], "arg_1": option}
                                   for j, option in enumerate(CHOICES[i])}}) + "\n" for i in range(3)))
    echo_rows = [{"doc_id": i, "value": float(text == "cat"), "target": "cat", "response": text}
                 for i, text in enumerate(echo)]
    (folder / "samples_echo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in echo_rows))
    tasks = {"agreement": TaskScore(value=0.0, metric="acc", n=3, samples_file="samples_agreement.jsonl"),
             "echo": TaskScore(value=0.0, metric="exact_match", n=len(echo), samples_file="samples_echo.jsonl")}
    alignment = AlignmentSummary(passed=True, n=0, median_abs_diff=None, max_abs_diff=None, confident_mismatches=None, reason="",
                                 near_tie_flips=None)
    return EvalResult(key="k", folder=folder, tasks=tasks, alignment=alignment, seconds=1.0)


def test_flipped_items_are_those_that_differ_with_their_texts(tmp_path):
    reference = _eval(tmp_path / "ref", choices=[1, 0, 1], golds=[0, 0, 1], echo=["cat", "cat"])
    variant = _eval(tmp_path / "var", choices=[0, 1, 1], golds=[0, 0, 1], echo=["cat", "dog"])
    table = eval_items.flipped(reference, variant, ["agreement", "echo"])
    rows = [dict(zip(table, values)) for values in zip(*table.values())]
    assert [(r["task"], r["doc_id"], r["direction"]) for r in rows] == [
        ("agreement", 1, "right→wrong"), ("echo", 1, "right→wrong"), ("agreement", 0, "wrong→right")]
    first = rows[0]
    assert (first["prompt"], first["expected"], first["reference_answer"], first["variant_answer"]) == (
        "The dog", " runs.", " runs.", " run.")
    assert (rows[1]["expected"], rows[1]["reference_answer"], rows[1]["variant_answer"]) == ("cat", "cat", "dog")


def test_a_task_dataset_has_every_item_with_its_prompt_and_expected_answer(tmp_path):
    evals = _eval(tmp_path / "ref", choices=[1, 0, 1], golds=[0, 0, 1], echo=["cat"])
    columns = eval_items.dataset(evals, "agreement")
    assert columns["doc_id"] == [0, 1, 2] and columns["prompt"] == CONTEXTS
    assert columns["expected"] == [" is here.", " runs.", " are red."]
    assert eval_items.dataset(evals, "echo") == {"subtask": ["echo"], "doc_id": [0], "prompt": [""], "expected": ["cat"]}


def test_without_lm_evals_samples_the_answers_are_named_by_choice(tmp_path):
    reference = _eval(tmp_path / "ref", choices=[0, 0, 1], golds=[0, 0, 1], echo=[])
    variant = _eval(tmp_path / "var", choices=[1, 0, 1], golds=[0, 0, 1], echo=[])
    for folder in (tmp_path / "ref", tmp_path / "var"):
        for path in folder.glob("lm-eval/*/*/*.jsonl"):
            path.unlink()
    table = eval_items.flipped(reference, variant, ["agreement"])
    assert (table["prompt"], table["reference_answer"], table["variant_answer"]) == ([""], ["choice 0"], ["choice 1"])
