"""`make bench`'s own logic: the derived recipes it runs and how it compares two runs' decisions."""

from pathlib import Path

import pytest

from benchmarks.suite import derived_recipe, same_decision, table, verdicts
from pipeline.recipe.load import load_recipe

REPO = Path(__file__).resolve().parents[2]


def report(winner, tied, rows):
    return {"winner": winner, "tied": tied,
            "rows": [{"variant": name, "promoted": name == winner, "passed": passed, "skipped": skipped}
                     for name, passed, skipped in rows]}


EXHAUSTIVE = report("q8_0", [], [("f16", True, None), ("q8_0", True, None), ("q4", False, None), ("bf16", True, None)])


def test_verdicts_name_each_variant_once():
    assert verdicts(EXHAUSTIVE) == {"f16": "pass", "q8_0": "promoted", "q4": "fail", "bf16": "pass"}


def test_a_fast_run_that_left_out_a_passing_but_untied_variant_decides_the_same():
    fast = report("q8_0", [], [("f16", False, "cost interval above q8_0's"), ("q8_0", True, None),
                               ("q4", False, None), ("bf16", True, None)])
    assert same_decision(EXHAUSTIVE, fast) == (True, [])


@pytest.mark.parametrize("fast, why", [
    (report("f16", [], [("f16", True, None), ("q8_0", True, None), ("q4", False, None), ("bf16", True, None)]),
     "winner"),
    (report("q8_0", [], [("f16", True, None), ("q8_0", True, None), ("q4", True, None), ("bf16", True, None)]),
     "q4: fail exhaustively, pass fast"),
])
def test_a_different_winner_or_verdict_is_a_different_decision(fast, why):
    same, differences = same_decision(EXHAUSTIVE, fast)
    assert not same and why in differences[0]


def test_leaving_out_a_variant_tied_with_the_winner_is_a_different_decision():
    exhaustive = report("q8_0", ["f16"], [("f16", True, None), ("q8_0", True, None)])
    fast = report("q8_0", ["f16"], [("f16", False, "cost"), ("q8_0", True, None)])
    same, differences = same_decision(exhaustive, fast)
    assert not same and differences == ["f16: left out, but tied with the winner exhaustively"]


def test_a_derived_recipe_keeps_naming_the_same_task_folders(tmp_path):
    source = REPO / "benchmarks" / "recipes" / "rerun.yaml"
    out = derived_recipe(source, tmp_path / "elsewhere" / "added.yaml",
                         lambda d: d["variants"].append({"name": "q4_k_m", "kind": "gguf", "type": "Q4_K_M"}))
    original, derived = load_recipe(source), load_recipe(out)
    assert [t.path for t in derived.evals.tasks] == [t.path for t in original.evals.tasks]
    assert [v.name for v in derived.variants] == ["f16", "q8_0", "q4_k_m"]


def test_the_table_marks_each_target_met_or_not():
    results = {"host": "x86_64, 2 cores", "parts": {
        "rerun": {"no_change_s": 4.2, "added_variant_s": 104.2, "record_only_s": 4.2, "added_variant_alone_s": 90.0, "added_ratio": 1.11,
                  "measured_at": "2026-12-01 01:00"},
        "cli": {"help": {"median_s": 0.7, "max_s": 0.8}, "validate": {"median_s": 0.9, "max_s": 1.1},
                "measured_at": "2026-12-01 01:00"}}}
    lines = table(results).splitlines()
    assert "| 3a. re-run, nothing changed | 4.2 s | ≤ 3 s | **no** |" in lines
    assert ("| 3b. one variant added, less deciding and recording / that variant alone | 1.11× (100 s vs 90 s)"
            " | ≈ 1× (≤ 1.2×) | yes |") in lines
    assert any(line.startswith("| 5. `quantgate --help` |") and line.endswith("| yes |") for line in lines)
    assert any(line.startswith("| 5. `quantgate validate") and line.endswith("| **no** |") for line in lines)
